"""LPIPS, DISTS and DBCNN on their official published files, against their reference implementations.

The official parts (lpips v0.1 heads, DISTS alpha/beta, DBCNN's S-CNN) ship inside iqaflow and are
read from the package here. torchvision's ImageNet backbones are not available, so a seeded random
backbone in torchvision's layout stands in for them on both sides: iqaflow reads it from the weights
store through the scorers' own ``setup`` (with the backbone's sha256 pin overridden: the pin admits
only torchvision's published file, and ``iqaflow weights add`` refuses the stand-in, tested below);
the references get it in place of their torchvision download: the ``lpips`` package (BSD-2), the
``DISTS_pytorch`` package (MIT), and DBCNN written here from zwx8981/DBCNN-PyTorch's definition.
Images: the five TID2013 pairs of ../shared/official, downscaled so the suite takes seconds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from iqaflow.errors import WeightsError
from iqaflow.models import weights
from iqaflow.models.base import WeightSpec
from iqaflow.models.deep.torch_scorer import TorchScorer
from iqaflow.models.deep.zoo import (
    ALEXNET,
    DBCNN_HEAD,
    DBCNN_SCNN,
    DISTS_ALPHA_BETA,
    LPIPS_HEADS,
    VGG16,
    Dbcnn,
    Dists,
    LpipsAlex,
    LpipsVgg,
)
from iqaflow.models.weights import MANIFEST, PACKAGED_DIR, WeightsStore, sha256_file

OFFICIAL = Path(__file__).resolve().parents[2] / "shared" / "official"
needs_official = pytest.mark.skipif(not OFFICIAL.is_dir(), reason=f"official reference files not found at {OFFICIAL}")
TOL = 1e-5

# Shipped file -> (official file, licence shipped next to it).
SHIPPED = {
    LPIPS_HEADS["alex"]: ("lpips/alex.pth", "lpips_v0.1.LICENSE"),
    LPIPS_HEADS["vgg"]: ("lpips/vgg.pth", "lpips_v0.1.LICENSE"),
    DISTS_ALPHA_BETA: ("dists/DISTS.pt", "dists_alpha_beta.LICENSE"),
    DBCNN_SCNN: ("dbcnn/scnn.pkl", "dbcnn_scnn.LICENSE"),
}


def unpinned(cls: type[TorchScorer]) -> type[TorchScorer]:
    """``cls`` with torchvision's backbone pin lifted, so a stand-in backbone loads through the same setup."""
    specs = tuple(replace(s, sha256=None) if s in (ALEXNET, VGG16) else s for s in cls.info.weights)
    return type(f"{cls.__name__}StandIn", (cls,), {"info": replace(cls.info, weights=specs)})


def features(backbone: str) -> nn.Sequential:
    """A torchvision ``features`` trunk, built by torchvision (not by iqaflow), uninitialised."""
    import torchvision

    if backbone == "alex":
        with torch.device("meta"):  # no 58M-parameter classifier to initialise only to drop it
            return torchvision.models.AlexNet().features.to_empty(device="cpu")
    return torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])


def load_features(path: Path, backbone: str) -> nn.Sequential:
    trunk = features(backbone)
    state = torch.load(path, map_location="cpu", weights_only=True)
    trunk.load_state_dict({k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")})
    return trunk.eval()


@pytest.fixture(scope="module")
def backbones(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Seeded stand-ins under torchvision's file names and keys (``features.N.*``; its classifier is unused)."""
    folder = tmp_path_factory.mktemp("stand-in-backbones")
    out = {}
    for seed, (backbone, spec) in enumerate((("alex", ALEXNET), ("vgg", VGG16))):
        torch.manual_seed(seed)
        trunk = features(backbone)
        for m in trunk.modules():
            if isinstance(m, nn.Conv2d):  # torchvision's VGG initialisation keeps activations at scale
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.normal_(m.bias, 0.0, 0.05)
        out[backbone] = folder / spec.filename
        torch.save({f"features.{k}": v for k, v in trunk.state_dict().items()}, out[backbone])
    return out


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WeightsStore]:
    s = WeightsStore(str(tmp_path / "weights"))
    monkeypatch.setattr(weights, "_store", s)
    yield s


@pytest.fixture(scope="module")
def pairs() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The TID2013 distorted images and their references, 64x48, float32 RGB in [0, 1]."""
    from PIL import Image

    folder = OFFICIAL / "tid2013-calibra"
    names = sorted(p.name for p in (folder / "dist").glob("*.bmp"))
    if not names:
        pytest.skip(f"TID2013 pairs not found in {folder}")

    def read(path: Path) -> np.ndarray:
        img = Image.open(path).convert("RGB").resize((64, 48), Image.BILINEAR)
        return np.asarray(img, dtype=np.float32) / 255

    return [read(folder / "dist" / n) for n in names], [read(folder / "ref" / n) for n in names]


def batch(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)


def add_stand_in(store: WeightsStore, path: Path) -> None:
    """What ``iqaflow weights add`` does once its pin check has passed."""
    store.put_bytes(path.name, path.read_bytes())


# -- what ships ---------------------------------------------------------------------------------------------
def test_shipped_parts_are_the_official_files_pinned_and_licensed() -> None:
    manifest = json.loads((PACKAGED_DIR / MANIFEST).read_text())
    notice = (PACKAGED_DIR / "NOTICE").read_text()
    for spec, (official, licence) in SHIPPED.items():
        assert sha256_file(PACKAGED_DIR / spec.filename) == spec.sha256 == manifest[spec.filename]
        assert spec.filename in notice and licence in notice
        text = (PACKAGED_DIR / licence).read_text()
        assert ("MIT License" in text) or ("Redistribution and use" in text)
        if OFFICIAL.is_dir():
            assert sha256_file(OFFICIAL / official) == spec.sha256
            assert (OFFICIAL / Path(official).parent / "LICENSE.txt").read_text() == text


def test_torchvision_pins_agree_with_the_published_names() -> None:
    for spec in (ALEXNET, VGG16):
        prefix = re.fullmatch(r"[a-z0-9-]+-([0-9a-f]{8,})\.pth", spec.filename)
        assert prefix and spec.sha256 and len(spec.sha256) == 64 and spec.sha256.startswith(prefix.group(1))


# -- the user's flow: add the backbone, `iqaflow models` says what is missing ---------------------------
def test_models_names_each_missing_file_and_how_to_add_it(store: WeightsStore) -> None:
    from iqaflow.cli.preflight import weights_readiness

    vgg = "vgg16-397923af.pth: missing — add torchvision's ImageNet VGG16 with iqaflow weights add"
    assert weights_readiness(LpipsVgg, store) == vgg
    assert weights_readiness(Dists, store) == vgg
    assert weights_readiness(LpipsAlex, store) == (
        "alexnet-owt-7be5be79.pth: missing — add torchvision's ImageNet AlexNet with iqaflow weights add"
    )
    dbcnn = weights_readiness(Dbcnn, store)
    assert dbcnn.startswith(vgg + ", dbcnn_head.pt: missing — DBCNN's head") and "dbcnn.pt" in dbcnn
    with pytest.raises(WeightsError, match="lpips_alex needs alexnet-owt-7be5be79.pth: add torchvision's"):
        LpipsAlex().setup("cpu")


def test_weights_add_refuses_a_stand_in_under_a_pinned_name(backbones: dict[str, Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from iqaflow.cli import app

    target = tmp_path / "store"
    result = CliRunner().invoke(app, ["weights", "add", str(backbones["alex"]), "--weights", str(target)])
    assert result.exit_code != 0 and isinstance(result.exception, WeightsError)
    assert f"pins 'alexnet-owt-7be5be79.pth' to the published file, sha256 {ALEXNET.sha256}" in str(result.exception)
    assert "add torchvision's ImageNet AlexNet" in str(result.exception)
    assert not (target / ALEXNET.filename).exists()
    other = tmp_path / "mine.pt"  # names no scorer pins are added as before
    torch.save({"w": torch.zeros(2)}, other)
    assert CliRunner().invoke(app, ["weights", "add", str(other), "--weights", str(target)]).exit_code == 0


def test_a_stand_in_put_behind_the_pin_is_a_mismatch(backbones: dict[str, Path], store: WeightsStore) -> None:
    from iqaflow.cli.preflight import weights_readiness

    add_stand_in(store, backbones["alex"])
    assert weights_readiness(LpipsAlex, store).startswith("alexnet-owt-7be5be79.pth: mismatch — add torchvision's")
    with pytest.raises(WeightsError, match=f"expected {ALEXNET.sha256}"):
        LpipsAlex().setup("cpu")
    assert weights_readiness(unpinned(LpipsAlex), store) == "yes"


# -- parity with the reference implementations ----------------------------------------------------------
@needs_official
@pytest.mark.parametrize("backbone", ["alex", "vgg"])
def test_lpips_matches_the_lpips_package(
    backbone: str, backbones: dict[str, Path], store: WeightsStore, pairs, monkeypatch: pytest.MonkeyPatch
) -> None:
    lpips = pytest.importorskip("lpips")

    add_stand_in(store, backbones[backbone])
    scorer = unpinned(LpipsAlex if backbone == "alex" else LpipsVgg)()
    scorer.setup("cpu")  # stand-in backbone from the store + the official head shipped in the package
    got = scorer.score_pairs(*pairs)[:, 0]

    # lpips builds its trunk from torchvision's ``alexnet(pretrained=...)``/``vgg16(...).features``: give it
    # the stand-in there, and its head from the official file, as model_path (no download either way).
    trunk = load_features(backbones[backbone], backbone)
    fake_tv = SimpleNamespace(
        alexnet=lambda **_: SimpleNamespace(features=trunk), vgg16=lambda **_: SimpleNamespace(features=trunk)
    )
    monkeypatch.setattr(lpips.pretrained_networks, "tv", fake_tv)
    ref = lpips.LPIPS(net=backbone, model_path=str(OFFICIAL / "lpips" / f"{backbone}.pth"), verbose=False)
    with torch.no_grad():
        want = ref(batch(pairs[0]), batch(pairs[1]), normalize=True).flatten().double().numpy()

    diff = float(np.abs(got - want).max())
    print(f"lpips_{backbone}: max |iqaflow - lpips| = {diff:.2e} over scores {np.round(want, 4)}")
    assert diff < TOL and np.ptp(want) > 1e-3


@needs_official
def test_dists_matches_the_dists_pytorch_package(
    backbones: dict[str, Path], store: WeightsStore, pairs, monkeypatch: pytest.MonkeyPatch
) -> None:
    dists_pt = pytest.importorskip("DISTS_pytorch.DISTS_pt")

    add_stand_in(store, backbones["vgg"])
    scorer = unpinned(Dists)()
    scorer.setup("cpu")
    got = scorer.score_pairs(*pairs)[:, 0]  # 48px shorter side: below the 256px cap, not resized

    trunk = load_features(backbones["vgg"], "vgg")
    monkeypatch.setattr(dists_pt, "models", SimpleNamespace(vgg16=lambda **_: SimpleNamespace(features=trunk)))
    ref = dists_pt.DISTS(load_weights=False).eval()  # its own loader reads a copy under sys.prefix
    official = torch.load(OFFICIAL / "dists" / "DISTS.pt", map_location="cpu", weights_only=True)
    ref.alpha.data, ref.beta.data = official["alpha"], official["beta"]
    with torch.no_grad():
        want = ref(batch(pairs[0]), batch(pairs[1])).double().numpy()

    diff = float(np.abs(got - want).max())
    print(f"dists: max |iqaflow - DISTS_pytorch| = {diff:.2e} over scores {np.round(want, 4)}")
    assert diff < TOL and np.ptp(want) > 1e-3


class ScnnReference(nn.Module):
    """S-CNN as zwx8981/DBCNN-PyTorch's SCNN.py defines it (written here from that definition): nine
    3x3 conv-BN-ReLU layers, stride 2 at the 2nd, 4th, 6th and 9th; for pre-training, 14x14 average pooling,
    two 1x1 conv-BN-ReLU projections and a 39-way classifier (distortion type x level)."""

    def __init__(self) -> None:
        super().__init__()
        widths = (48, 48, 64, 64, 64, 64, 128, 128, 128)
        layers: list[nn.Module] = []
        cin = 3
        for i, cout in enumerate(widths):
            layers += [nn.Conv2d(cin, cout, 3, 2 if i in (1, 3, 5, 8) else 1, 1), nn.BatchNorm2d(cout), nn.ReLU()]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.pooling = nn.AvgPool2d(14, 1)
        self.projection = nn.Sequential(
            nn.Conv2d(128, 256, 1),
            nn.BatchNorm2d(256),
            nn.ReLU(),
            nn.Conv2d(256, 256, 1),
            nn.BatchNorm2d(256),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(256, 39)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, 224, 224) -> (N, 39)
        return self.classifier(self.projection(self.pooling(self.features(x))).flatten(1))


def dbcnn_reference(vgg: nn.Module, scnn: nn.Module, fc: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """DBCNN.forward of zwx8981/DBCNN-PyTorch on an ImageNet-normalised batch: bilinear pooling of VGG16's
    relu5_3 and S-CNN's features (upsampled, align_corners, where sizes differ), sqrt(x + 1e-8), L2, fc."""
    x1, x2 = vgg(x), scnn(x)
    n, _, h, w = x1.shape
    if x2.shape[2:] != (h, w):
        x2 = F.interpolate(x2, size=(h, w), mode="bilinear", align_corners=True)
    z = torch.bmm(x1.reshape(n, 512, h * w), x2.reshape(n, 128, h * w).transpose(1, 2)) / (h * w)
    return fc(F.normalize(torch.sqrt(z.reshape(n, -1) + 1e-8))).squeeze(1)


@needs_official
def test_dbcnn_official_scnn_and_network_match_the_reference(
    backbones: dict[str, Path], store: WeightsStore, pairs
) -> None:
    official = torch.load(OFFICIAL / "dbcnn" / "scnn.pkl", map_location="cpu", weights_only=True)
    scnn = ScnnReference().eval()
    missing, unexpected = scnn.load_state_dict(
        {k.removeprefix("module."): v for k, v in official.items()}, strict=False
    )
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing)  # saved before torch 0.4.1
    g = torch.Generator().manual_seed(0)
    fc = nn.Linear(512 * 128, 1)
    with torch.no_grad():
        fc.weight.copy_(torch.randn(1, 512 * 128, generator=g) * 0.05)
        fc.bias.fill_(0.5)
    store.put_state_dict(DBCNN_HEAD.filename, {"fc.weight": fc.weight.detach(), "fc.bias": fc.bias.detach()})
    add_stand_in(store, backbones["vgg"])

    scorer = unpinned(Dbcnn)()
    scorer.input_size = (64, 64)  # the images below are already that size: no resize on either side
    scorer.setup("cpu")  # stand-in VGG16 + the official S-CNN shipped in the package + the head above
    from PIL import Image

    images = [np.asarray(Image.fromarray((i * 255).round().astype(np.uint8)).resize((64, 64)), np.float32) / 255
              for i in pairs[0] + pairs[1]]  # fmt: skip
    got = scorer.score(images)[:, 0]

    x = (batch(images) - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]
    ).view(1, 3, 1, 1)
    vgg = load_features(backbones["vgg"], "vgg")[:30]  # DBCNN drops VGG16's last max-pool
    with torch.no_grad():
        want = dbcnn_reference(vgg, scnn.features, fc, x).double().numpy()
        scnn_diff = float((scorer.net.features2(x) - scnn.features(x)).abs().max())  # type: ignore[union-attr]
        scnn_scale = float(scnn.features(x).abs().max())
        classes = scnn(F.interpolate(x[:2], size=(224, 224), mode="bilinear", antialias=True))
    diff = float(np.abs(got - want).max())
    print(f"dbcnn: S-CNN features max diff {scnn_diff:.2e} (max {scnn_scale:.3g}); scores max diff {diff:.2e}")
    assert scnn_diff < TOL * max(1.0, scnn_scale) and diff < TOL and np.ptp(want) > 1e-4
    assert classes.shape == (2, 39) and torch.isfinite(classes).all()  # the whole official S-CNN loads and runs


def test_whole_network_in_the_store_takes_precedence(store: WeightsStore) -> None:
    """A converted or fine-tuned whole network (e.g. dbcnn.pt) is used instead of the published parts."""
    Dbcnn.make_test_weights(store, seed=1)
    scorer = Dbcnn()
    scorer.setup("cpu")
    torch.manual_seed(1)
    want = Dbcnn.build().state_dict()
    assert all(torch.equal(v, want[k]) for k, v in scorer.net.state_dict().items())  # type: ignore[union-attr]
    store.put_state_dict("dbcnn.pt", {"fc.weight": torch.zeros(1, 3)})
    with pytest.raises(WeightsError, match="'dbcnn.pt' in the weights store is not a whole dbcnn network"):
        Dbcnn().setup("cpu")


def test_dbcnn_head_of_the_wrong_shape_names_the_part(backbones: dict[str, Path], store: WeightsStore) -> None:
    add_stand_in(store, backbones["vgg"])
    store.put_state_dict(DBCNN_HEAD.filename, {"fc.weight": torch.zeros(1, 10), "fc.bias": torch.zeros(1)})
    with pytest.raises(WeightsError, match="wrong shape \\['fc.weight'\\]"):
        unpinned(Dbcnn)().setup("cpu")
    assert WeightSpec("dbcnn_head.pt") == DBCNN_HEAD  # fitted by the user: no pin, the store's hash
