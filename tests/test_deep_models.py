"""Deep scorers: store round trips, batching invariance, and the maths against independent code.

Independent references: piq's ContentLoss / DISTS (Apache-2.0) evaluate LPIPS and DISTS on the
same feature trunks with their own normalisation, pooling and weighting code (rtol 1e-5); the
reference code's grouped-convolution target network for HyperIQA; scipy for Kang's local
contrast normalisation; an explicit loop for DBCNN's bilinear pooling. Tolerances: store vs
in-memory 1e-6, batch of 1 vs batch of N 1e-5 (relative to the output scale).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np
import pytest
import torch

from iqaflow.errors import WeightsError
from iqaflow.models import weights
from iqaflow.models.base import WeightSpec
from iqaflow.models.deep.torch_scorer import TorchScorer, grid_patches, grid_starts
from iqaflow.models.deep.zoo import Dbcnn, Dists, HyperIqa, Kang, LpipsAlex, LpipsVgg
from iqaflow.models.registry import all_scorers
from iqaflow.models.weights import WeightsStore

torch.set_num_threads(1)


class HyperIqaR18(HyperIqa):
    """The ResNet-18 variant (not registered): same hyper network, a quarter of the CPU time."""

    info = replace(HyperIqa.info, name="hyperiqa_r18_test", weights=(WeightSpec("hyperiqa_r18_test.pt"),))
    backbone = "resnet18"


def rgb(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    # Smooth structure plus noise, so features and statistics are not degenerate.
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(7 * x + c) * np.cos(5 * y - c) for c in range(3)], axis=-1) * 0.3 + 0.5
    return np.clip(base + rng.normal(0, 0.08, (h, w, 3)), 0, 1).astype(np.float32)


def make_images(kind: str, n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = [(64, 64), (48, 80), (64, 64), (72, 56)][:n]
    imgs = [rgb(rng, h, w) for h, w in shapes]
    return [img.mean(axis=2).astype(np.float32) for img in imgs] if kind == "gray" else imgs


def distort(img: np.ndarray, seed: int) -> np.ndarray:
    return np.clip(img + np.random.default_rng(seed).normal(0, 0.1, img.shape), 0, 1).astype(np.float32)


# Scorer class, per-instance preprocessing overrides that keep CPU tests small.
CASES: dict[str, tuple[type[TorchScorer], dict[str, object]]] = {
    "lpips_alex": (LpipsAlex, {}),
    "lpips_vgg": (LpipsVgg, {}),
    "dists": (Dists, {}),
    "kang": (Kang, {}),
    "dbcnn": (Dbcnn, {"input_size": (64, 64)}),
    "hyperiqa_r18": (HyperIqaR18, {"input_size": (240, 240), "patch_grid": (2, 1)}),
}


@pytest.fixture
def store(tmp_path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WeightsStore]:
    """A temporary process-wide weights store; the previous one comes back afterwards."""
    s = WeightsStore(str(tmp_path / "weights"))
    monkeypatch.setattr(weights, "_store", s)
    yield s


def instance(cls: type[TorchScorer], overrides: dict[str, object]) -> TorchScorer:
    scorer = cls()
    for k, v in overrides.items():
        setattr(scorer, k, v)
    return scorer


def run(scorer: TorchScorer, imgs: list[np.ndarray]) -> np.ndarray:
    if scorer.info.kind == "fr":  # the distortion depends on the image only, so subsets score the same
        return scorer.score_pairs([distort(i, int(i.sum() * 1e3)) for i in imgs], imgs)
    return scorer.score(imgs)


def test_registered_metadata() -> None:
    scorers = all_scorers()
    expect = {"lpips_alex": "fr", "lpips_vgg": "fr", "dists": "fr", "kang": "nr", "dbcnn": "nr", "hyperiqa": "nr"}
    for name, kind in expect.items():
        info = scorers[name].info
        assert info.kind == kind and info.batchable
        assert info.higher_is_better is (kind == "nr" and name != "kang")  # Kang's published scale is DMOS
        if name in ("lpips_alex", "lpips_vgg", "dists", "dbcnn"):  # pinned torchvision backbone + published parts
            assert info.weights[0].filename in ("alexnet-owt-7be5be79.pth", "vgg16-397923af.pth")
            assert all(spec.sha256 for spec in info.weights[:2]) and len(info.weights) == 2 + (name == "dbcnn")
        else:
            assert info.weights == (WeightSpec("CNNIQA-LIVE" if name == "kang" else f"{name}.pt"),)
    assert scorers["kang"].info.colour == "rgb"  # it takes PIL's integer luma itself, as the reference


@pytest.mark.parametrize("name", list(CASES))
def test_store_roundtrip_batching_and_determinism(name: str, store: WeightsStore) -> None:
    cls, overrides = CASES[name]
    imgs = make_images(cls.info.colour, 4, seed=1)
    cls.make_test_weights(store, seed=3)
    loaded = instance(cls, overrides)
    loaded.setup("cpu")
    torch.manual_seed(3)
    in_memory = instance(cls, overrides)
    in_memory.load_state_dict(cls.build().state_dict())

    got = run(loaded, imgs)
    assert got.shape == (4, 1) and got.dtype == np.float64 and np.isfinite(got).all()
    np.testing.assert_allclose(got, run(in_memory, imgs), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(got, run(loaded, imgs))  # deterministic
    one_by_one = np.concatenate([run(loaded, [img]) for img in imgs])
    scale = max(1e-3, float(np.abs(got).max()))
    np.testing.assert_allclose(one_by_one, got, rtol=0, atol=1e-5 * scale)
    assert np.ptp(got) > 0  # the inputs differ, so must the scores


def test_hyperiqa_resnet50_roundtrip(store: WeightsStore) -> None:
    HyperIqa.make_test_weights(store, seed=0)
    scorer = instance(HyperIqa, {"input_size": (224, 224), "patch_grid": (1, 1)})
    scorer.setup("cpu")
    out = scorer.score(make_images("rgb", 2, seed=2))
    assert out.shape == (2, 1) and np.isfinite(out).all()


def test_identical_pairs_score_zero(store: WeightsStore) -> None:
    img = make_images("rgb", 1, seed=4)
    for cls in (LpipsAlex, Dists):
        cls.make_test_weights(store)
        scorer = cls()
        scorer.setup("cpu")
        assert abs(scorer.score_pairs(img, img)[0, 0]) < 1e-6


def test_missing_weights_name_the_file(store: WeightsStore) -> None:
    with pytest.raises(WeightsError, match="alexnet-owt-7be5be79.pth: add torchvision's ImageNet AlexNet"):
        LpipsAlex().setup("cpu")


def test_tampered_weights_fail_sha256(store: WeightsStore) -> None:
    Kang.make_test_weights(store)
    path = store.local_path(Kang.info.weights[0])
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256"):
        Kang().setup("cpu")


def test_weights_of_another_network_are_rejected(store: WeightsStore) -> None:
    torch.manual_seed(0)
    store.put_state_dict(Kang.info.weights[0].filename, Dbcnn.build().state_dict())
    with pytest.raises(WeightsError, match="does not fit"):
        Kang().setup("cpu")


def test_scoring_before_setup_and_mismatched_pairs_raise(store: WeightsStore) -> None:
    imgs = make_images("rgb", 2, seed=5)
    with pytest.raises(RuntimeError, match="setup"):
        Kang().score([imgs[0].mean(axis=2)])
    LpipsAlex.make_test_weights(store)
    scorer = LpipsAlex()
    scorer.setup("cpu")
    with pytest.raises(ValueError, match="same shape"):
        scorer.score_pairs([imgs[0]], [imgs[1]])
    with pytest.raises(TypeError):
        scorer.score(imgs)
    with pytest.raises(ValueError, match="rgb"):
        scorer.score_pairs([imgs[0][..., 0]], [imgs[0][..., 0]])


# -- the maths against independent implementations -----------------------------------------------------
def _pairs(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    img = torch.from_numpy(np.stack(make_images("rgb", 2, seed)[::2])).permute(0, 3, 1, 2)
    return torch.from_numpy(np.stack([distort(i, 9) for i in img.permute(0, 2, 3, 1).numpy()])).permute(0, 3, 1, 2), img


@pytest.mark.parametrize("backbone", ["alex", "vgg"])
def test_lpips_matches_piq_content_loss(backbone: str) -> None:
    from piq.perceptual import ContentLoss

    from iqaflow.models.deep.nets.lpips import LPIPS, SCALE, SHIFT, TAPS

    torch.manual_seed(0)
    net = LPIPS(backbone).eval()  # type: ignore[arg-type]
    ref = ContentLoss(
        feature_extractor=copy.deepcopy(net.features),
        layers=[str(i) for i in TAPS[backbone]],
        weights=[lin.weight.detach() for lin in net.lins],
        mean=[(1 + s) / 2 for s in SHIFT],
        std=[s / 2 for s in SCALE],
        normalize_features=True,
        reduction="none",
    )
    x, y = _pairs(6)
    with torch.no_grad():
        ours, theirs = net(x, y), ref(x, y)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5)


def test_dists_matches_piq() -> None:
    import piq
    from piq.perceptual import IMAGENET_MEAN, IMAGENET_STD, ContentLoss

    from iqaflow.models.deep.nets.dists import CHANNELS, DISTS, TAPS
    from iqaflow.models.deep.nets.trunks import vgg16_features

    torch.manual_seed(0)
    net = DISTS().eval()
    plain = vgg16_features()[: TAPS[-1] + 1]  # max-pools; piq swaps in its own L2 pooling
    plain.load_state_dict(net.features.state_dict())
    w_sum = net.alpha.sum() + net.beta.sum()
    ref = piq.DISTS.__new__(piq.DISTS)  # piq.DISTS() would download; feed it our weights instead
    ContentLoss.__init__(
        ref,
        feature_extractor=plain,
        layers=[str(i) for i in TAPS],
        weights=[
            *torch.split(net.alpha.detach() / w_sum, CHANNELS, 1),
            *torch.split(net.beta.detach() / w_sum, CHANNELS, 1),
        ],
        replace_pooling=True,
        reduction="none",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        normalize_features=False,
        allow_layers_weights_mismatch=True,
    )
    x, y = _pairs(7)
    with torch.no_grad():
        ours, theirs = net(x, y), ref(x, y)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5)


def test_kang_local_contrast_normalisation_matches_scipy() -> None:
    from scipy import ndimage

    from iqaflow.models.deep.nets.kang import LCN_C, local_contrast_normalise

    img = make_images("gray", 1, seed=8)[0].astype(np.float64)
    for window in (3, 5):  # scipy's "reflect" is the symmetric border the reference code uses
        mu = ndimage.uniform_filter(img, window, mode="reflect")
        sigma = np.sqrt(np.maximum(ndimage.uniform_filter(img**2, window, mode="reflect") - mu**2, 0))
        ref = (img - mu) / (sigma + LCN_C)
        ours = local_contrast_normalise(torch.from_numpy(img)[None, None].float(), window)[0, 0].numpy()
        np.testing.assert_allclose(ours, ref, atol=1e-5)  # float32, centred first; ref is float64


def test_dbcnn_bilinear_pool_matches_loop() -> None:
    from iqaflow.models.deep.nets.dbcnn import bilinear_pool

    g = torch.Generator().manual_seed(0)
    a, b = (  # post-ReLU maps as in the network
        torch.rand(2, 5, 3, 4, generator=g, dtype=torch.float64),
        (torch.rand(2, 6, 3, 4, generator=g, dtype=torch.float64) - 0.3).clamp_min(0),
    )
    b[:, 0] = 0  # a dead channel: the reference's sqrt(0 + 1e-8), not 0
    for n in range(2):
        outer = sum(torch.outer(a[n, :, i, j], b[n, :, i, j]) for i in range(3) for j in range(4)) / 12
        v = torch.sqrt(outer.flatten() + 1e-8)
        torch.testing.assert_close(bilinear_pool(a, b)[n], v / v.norm(), rtol=1e-12, atol=1e-12)


def test_hyperiqa_target_net_matches_reference_grouped_conv() -> None:
    import torch.nn.functional as F

    from iqaflow.models.deep.nets.hyperiqa import target_net

    g = torch.Generator().manual_seed(0)
    sizes = (8, 6, 4, 3, 1)
    ws = [torch.randn(2, sizes[k + 1], sizes[k], generator=g) for k in range(4)]
    bs = [torch.randn(2, sizes[k + 1], generator=g) for k in range(4)]
    x = torch.randn(2, 8, generator=g)

    def target_fc(inp: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # The reference code's TargetFC: one grouped 1x1 convolution over the batch.
        n = inp.shape[0]
        out = F.conv2d(inp.reshape(1, -1, 1, 1), w.reshape(-1, w.shape[2], 1, 1), b.reshape(-1), groups=n)
        return out.reshape(n, w.shape[1])

    h = x
    for k in range(4):
        h = target_fc(h, ws[k], bs[k])
        h = torch.sigmoid(h) if k < 3 else h
    torch.testing.assert_close(target_net(x, ws, bs), h, rtol=1e-5, atol=1e-6)


# -- size policy --------------------------------------------------------------------------------------------
def test_grid_patches_are_deterministic_and_cover_the_image() -> None:
    assert grid_starts(100, 32, 1) == [34]
    assert grid_starts(100, 32, 3) == [0, 34, 68]
    x = torch.arange(2 * 96 * 64, dtype=torch.float32).reshape(1, 2, 96, 64)
    p = grid_patches(x, 32, None, 256)
    assert p.shape == (6, 2, 32, 32)
    assert torch.equal(p[0], x[0, :, :32, :32]) and torch.equal(p[-1], x[0, :, 64:, 32:])
    assert grid_patches(x, 32, None, 2).shape[0] <= 2
    assert grid_patches(x[..., :20, :40], 32, (1, 1), 256).shape == (1, 2, 32, 32)  # upscaled, not padded


def test_grid_patches_of_a_batch_are_each_images_crops_in_order() -> None:
    x = torch.rand(3, 1, 70, 90, generator=torch.Generator().manual_seed(0))
    crops = [x[i, :, r : r + 32, c : c + 32] for i in range(3) for r in (0, 38) for c in (0, 58)]  # 2 x 2 grid
    assert torch.equal(grid_patches(x, 32, None, 256), torch.stack(crops))
    y = x.clone().requires_grad_()  # the cached index tensors also serve where autograd records
    with torch.inference_mode():
        grid_patches(x, 32, None, 256)
    grid_patches(y, 32, None, 256).sum().backward()
    assert y.grad is not None and y.grad.sum().item() == 3 * 4 * 32 * 32  # the crops do not overlap


# -- converting published checkpoints ------------------------------------------------------------------
def _seeded(build: Callable[[], torch.nn.Module], seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return build().state_dict()


def test_trunks_have_torchvision_keys_and_shapes() -> None:
    import torchvision

    from iqaflow.models.deep.nets.trunks import alexnet_features, vgg16_features

    for ours, theirs in [
        (alexnet_features(), torchvision.models.alexnet(weights=None).features),
        (vgg16_features(), torchvision.models.vgg16(weights=None, init_weights=False).features),
    ]:
        assert {k: v.shape for k, v in ours.state_dict().items()} == {
            k: v.shape for k, v in theirs.state_dict().items()
        }


@pytest.mark.parametrize("backbone", ["alex", "vgg"])
def test_convert_lpips(backbone: str) -> None:
    from iqaflow.models.deep.nets.convert import lpips_state_dict
    from iqaflow.models.deep.nets.lpips import CHANNELS, LPIPS
    from iqaflow.models.deep.nets.trunks import alexnet_features, vgg16_features

    trunk = {
        f"features.{k}": v for k, v in _seeded(alexnet_features if backbone == "alex" else vgg16_features, 1).items()
    }
    trunk["classifier.1.weight"] = torch.zeros(3, 3)  # a full torchvision checkpoint: ignored
    g = torch.Generator().manual_seed(2)
    heads = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for k, c in enumerate(CHANNELS[backbone])}
    state = lpips_state_dict(trunk, heads, backbone)  # type: ignore[arg-type]
    net = LPIPS(backbone)  # type: ignore[arg-type]
    net.load_state_dict(state, strict=True)
    assert torch.equal(net.features[0].weight, trunk["features.0.weight"])
    for k in range(5):
        assert torch.equal(net.lins[k].weight, heads[f"lin{k}.model.1.weight"])
    # The lpips package's own layout (trunk in net.sliceK.N, heads beside it) converts to the same.
    taps = (0, *(t + 1 for t in net.taps))
    whole = dict(heads)
    for s in range(5):
        for k, v in trunk.items():
            idx = int(k.split(".")[1]) if k.startswith("features.") else -1
            if taps[s] <= idx < taps[s + 1]:
                whole[f"net.slice{s + 1}.{idx}.{k.split('.')[2]}"] = v
    same = lpips_state_dict(whole, whole, backbone)  # type: ignore[arg-type]
    assert all(torch.equal(same[k], state[k]) for k in state)


def test_convert_dists_dbcnn_hyperiqa_and_reject_wrong_files() -> None:
    from iqaflow.models.deep.nets.convert import dbcnn_state_dict, dists_state_dict, hyperiqa_state_dict
    from iqaflow.models.deep.nets.dbcnn import DBCNN
    from iqaflow.models.deep.nets.dists import DISTS
    from iqaflow.models.deep.nets.hyperiqa import HyperIQA
    from iqaflow.models.deep.nets.trunks import vgg16_features

    vgg = {f"features.{k}": v for k, v in _seeded(vgg16_features, 1).items()}
    ab = {"alpha": torch.rand(1, 1475, 1, 1), "beta": torch.rand(1, 1475, 1, 1)}
    DISTS().load_state_dict(dists_state_dict(vgg, ab), strict=True)
    official = {f"module.{k}": v for k, v in _seeded(DBCNN, 2).items()}  # saved from nn.DataParallel
    state = dbcnn_state_dict(official)
    assert torch.equal(state["fc.weight"], official["module.fc.weight"])
    hyper = _seeded(lambda: HyperIQA("resnet18"), 3)
    hyper["res.fc.weight"] = torch.zeros(1000, 512)
    HyperIQA("resnet18").load_state_dict(hyperiqa_state_dict(hyper, "resnet18"), strict=True)
    with pytest.raises(WeightsError, match="missing"):
        dists_state_dict({}, ab)
    with pytest.raises(WeightsError, match="wrong shape"):
        hyperiqa_state_dict(hyper, "resnet50")
