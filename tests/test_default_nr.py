"""iqaflow_nr: the converted MobileNet against the TFLite interpreter, the head against scikit-learn, the shipped
files, the tensor path, and a CI guard on held-out human scores (BIQ2021's test split).

Tolerances:
* backbone parity: the float network against the official int8 one, on real photos. The int8 model
  re-quantises every activation, so features differ by its rounding: correlation >= 0.99 per image
  (measured 0.997-0.9996); v2's classifier gives the same top-1 ImageNet class on the Kodak photos, and
  on distorted CLIVE photos a class among the int8 model's top three (measured: 5 of 6 the same; the
  other is an ambiguous photo, int8 probabilities 0.23 and 0.16, float 0.23 for the second).
* head: KernelHead in float32 against scikit-learn's SVR in float64: 1e-3 of the MOS scale.
* CI guard: SRCC >= 0.78 on a fixed 300-image slice of BIQ2021's test split (the whole split gives
  the figure in the README); the split chose nothing in the model.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, SHARED_DATA

from iqaflow.errors import ConfigError, WeightsError
from iqaflow.evaluation.metrics import srcc
from iqaflow.models.deep.default_nr import (
    BACKBONE_FILE,
    BACKBONE_SHA256,
    FAST_HEAD_FILE,
    FAST_HEAD_SHA256,
    HEAD_FILE,
    HEAD_SHA256,
)
from iqaflow.models.deep.nets.kernel_head import KernelHead, head_state
from iqaflow.models.deep.nets.mobilenet_views import ViewSet, crop_offsets, make_views
from iqaflow.models.deep.nets.tflite_graph import TFLiteNet
from iqaflow.models.weights import MANIFEST, PACKAGED_DIR, WeightsStore, configure_store, sha256_file

OFFICIAL = REPO.parent / "shared" / "official" / "mobilenet"
V1 = OFFICIAL / "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"
V2 = OFFICIAL / "mobilenet_v2_1.0_224_quant.tflite"
BIQ_TEST = SHARED_DATA / "biq2021-test"
GUARD_SLICE = 300


@pytest.fixture
def empty_store(tmp_path: Path):  # noqa: ANN201
    store = configure_store(str(tmp_path / "empty-store"))
    yield store
    configure_store(None)


def _photos() -> list[tuple[bool, np.ndarray]]:
    """Real photos at 224x224 uint8 (PIL bilinear), each with whether it is a pristine (Kodak) one."""
    from PIL import Image

    files = sorted((SHARED_DATA / "kodak").glob("*.png"))[:6] + sorted((SHARED_DATA / "clive-subset" / "images")
                                                                        .glob("*.JPG"))[:6]
    return [("kodak" in str(f), np.array(Image.open(f).convert("RGB").resize((224, 224), Image.BILINEAR)))
            for f in files]


def _tflite_outputs(path: Path, names: tuple[str, ...], image: np.ndarray) -> list[np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(str(path), num_threads=1, experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], image[None])
    it.invoke()
    details = {d["name"]: d for d in it.get_tensor_details()}
    out = []
    for name in names:
        d = details[name]
        scale, zero = d["quantization"]
        out.append((it.get_tensor(d["index"]).astype(np.float64).reshape(-1) - zero) * scale)
    return out


def _float_outputs(graph: dict, names: tuple[str, ...], image: np.ndarray) -> list[np.ndarray]:
    net = TFLiteNet(graph).eval()
    x = (torch.from_numpy(image).permute(2, 0, 1)[None].double() - graph["input_zero"]) * graph["input_scale"]
    with torch.inference_mode():
        return [t[0].double().numpy().reshape(-1) for t in net(x.float(), names)]


@pytest.mark.parametrize("path", [V1, V2], ids=["v1", "v2"])
def test_converted_mobilenet_matches_the_tflite_interpreter_on_photos(path: Path) -> None:
    from iqaflow.models.deep.nets.tflite_read import read_tflite

    graph = read_tflite(path)
    pooled = "MobilenetV1/Logits/AvgPool_1a/AvgPool" if path == V1 else "MobilenetV2/Logits/AvgPool"
    names = (pooled,) if path == V1 else (pooled, "MobilenetV2/Predictions/Softmax")
    for pristine, image in _photos():
        ref = _tflite_outputs(path, names, image)
        got = _float_outputs(graph, names, image)
        assert np.corrcoef(ref[0], got[0])[0, 1] >= 0.99
        if len(names) == 2:
            top = int(np.argmax(got[1]))
            if pristine:  # a clear subject: the same class
                assert top == int(np.argmax(ref[1]))
            else:  # distorted photos can be ambiguous (top-1 at 0.2): among the int8 model's first three
                assert top in np.argsort(-ref[1])[:3]


def test_shipped_backbone_is_the_official_file_converted(tmp_path: Path) -> None:
    from iqaflow.models.deep.nets.tflite_read import read_tflite

    shipped = torch.load(PACKAGED_DIR / BACKBONE_FILE, weights_only=True)
    fresh = read_tflite(V1)
    assert shipped["ops"] == fresh["ops"] and shipped["names"] == fresh["names"]
    assert set(shipped["tensors"]) == set(fresh["tensors"])
    for k, t in fresh["tensors"].items():
        for part in ("q", "scale", "zero"):
            assert torch.equal(shipped["tensors"][k][part], t[part])
    assert sha256_file(PACKAGED_DIR / BACKBONE_FILE) == BACKBONE_SHA256


def test_shipped_files_are_pinned_listed_and_carry_their_notices() -> None:
    manifest = json.loads((PACKAGED_DIR / MANIFEST).read_text())
    for name, pinned in ((BACKBONE_FILE, BACKBONE_SHA256), (HEAD_FILE, HEAD_SHA256),
                         (FAST_HEAD_FILE, FAST_HEAD_SHA256)):
        assert sha256_file(PACKAGED_DIR / name) == pinned == manifest[name]
    for name, crops in ((HEAD_FILE, 5), (FAST_HEAD_FILE, 1)):
        assert (PACKAGED_DIR / name).stat().st_size < 16_000_000
        head = torch.load(PACKAGED_DIR / name, weights_only=True)
        assert head["backbone_sha256"] == BACKBONE_SHA256 and int(head["crops"]) == crops
        assert head["sources"] == ["biq2021-train", "clive-subset"] and int(head["n_images"]) == 10_400
        notice = (PACKAGED_DIR / name.replace(".pt", ".NOTICE")).read_text()
        assert "Ahmed" in notice and "COPYRIGHT NOTICE STARTS WITH THIS LINE" in notice
    assert "Apache License" in (PACKAGED_DIR / "mobilenet_v1_224.LICENSE").read_text()
    index = (PACKAGED_DIR / "NOTICE").read_text()
    assert all(name in index for name in (BACKBONE_FILE, HEAD_FILE, FAST_HEAD_FILE, "iqaflow_nr_classic.pt"))


def test_a_different_head_of_the_same_name_is_refused(empty_store: WeightsStore) -> None:
    from iqaflow.models.registry import create_scorer

    empty_store.put_bytes(HEAD_FILE, b"not the shipped head")
    with pytest.raises(WeightsError, match="sha256"):
        create_scorer("iqaflow_nr")


def test_default_models_start_with_the_default_scorer() -> None:
    from iqaflow.config.run import DEFAULT_MODELS

    assert DEFAULT_MODELS[0] == "iqaflow_nr" and {"sharpness", "exposure", "noise"} <= set(DEFAULT_MODELS)


def test_kernel_head_equals_scikit_learn_svr() -> None:
    from sklearn.svm import SVR

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 12))
    y = np.tanh(x[:, 0] - 0.5 * x[:, 1] ** 2) * 0.2 + 0.5
    mean, std = x.mean(0), x.std(0)
    comps = np.linalg.svd((x - mean) / std, full_matrices=False)[2][:8]
    p = ((x - mean) / std) @ comps.T
    t = (y - y.mean()) / y.std()
    model = SVR(C=3.0, gamma=0.1, epsilon=0.1).fit(p, t)
    head = KernelHead(head_state(mean, std, comps, model.support_vectors_, model.dual_coef_.ravel(),
                                 model.intercept_[0], 0.1, y.mean(), y.std()))
    xt = rng.normal(size=(50, 12))
    want = 100 * (model.predict(((xt - mean) / std) @ comps.T) * y.std() + y.mean())
    got = head(torch.from_numpy(xt).float()).double().numpy()
    np.testing.assert_allclose(got, np.clip(want, 0, 100), atol=1e-3 * 100)


def test_views_are_the_whole_image_then_native_crops() -> None:
    x = torch.rand(2, 3, 512, 640)
    v = make_views(x, ViewSet(crops=5))
    assert v.shape == (2, 6, 3, 224, 224)
    for k, (r, c) in enumerate(crop_offsets(512, 640, 5), start=1):
        assert torch.equal(v[:, k], x[:, :, r : r + 224, c : c + 224])
    # Larger images are brought to crop_side on their shorter side first; small ones up to 224.
    assert make_views(torch.rand(1, 3, 1024, 2048), ViewSet(crops=1)).shape == (1, 2, 3, 224, 224)
    assert make_views(torch.rand(1, 3, 100, 150), ViewSet(crops=5)).shape == (1, 6, 3, 224, 224)
    with pytest.raises(ValueError, match="crops"):
        ViewSet(crops=7)


def test_tensor_path_scores_like_the_numpy_path() -> None:
    """score_tensors (what the nvJPEG path calls) against score on the same decoded pixels, fp32 on CPU:
    both scale by float32 1/255 (colour.convert), so only float summation order differs: within 1e-3 MOS."""
    from PIL import Image

    from iqaflow.models.colour import convert
    from iqaflow.models.registry import create_scorer

    scorer = create_scorer("iqaflow_nr")
    scorer.cpu_bf16 = False
    files = sorted((BIQ_TEST / "images").glob("*.jpg"))[:4]
    pixels = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    numpy_scores = scorer.score([convert(p, "rgb") for p in pixels])[:, 0]
    tensor_scores = scorer.score_tensors([torch.from_numpy(p.copy()).permute(2, 0, 1) for p in pixels])[:, 0]
    np.testing.assert_allclose(tensor_scores, numpy_scores, atol=1e-3)


def test_ci_guard_held_out_biq2021_slice() -> None:
    """The shipped scorer, through the pipeline's read/decode/score path, on 300 held-out lab-rated photos."""
    from iqaflow.tasks.learn.evaluate import read_rated, score_paths

    rated = read_rated(str(BIQ_TEST / "mos.csv"), str(BIQ_TEST / "images"))
    paths, mos = rated.paths[:GUARD_SLICE], rated.mos[:GUARD_SLICE]
    from iqaflow.models.registry import create_scorer

    scores = score_paths([create_scorer("iqaflow_nr")], paths, [None] * len(paths))["iqaflow_nr"]
    assert np.isfinite(scores).all() and ((scores >= 0) & (scores <= 100)).all()
    assert srcc(scores, mos) >= 0.78


def test_recipe_names_the_missing_training_data(tmp_path: Path) -> None:
    from iqaflow.config.default_nr import load_recipe, recipe_scorer

    cfg = tmp_path / "r.yaml"
    cfg.write_text("train:\n  - name: biq2021-train\n    mos: nowhere/train.csv\n")
    with pytest.raises(ConfigError, match=r"train\[0\]\.mos.*data/biq2021"):
        load_recipe(cfg)
    assert recipe_scorer(REPO / "configs" / "default_nr_classic.yaml") == "iqaflow_nr_classic"
    assert recipe_scorer(REPO / "configs" / "default_nr.yaml") == "iqaflow_nr"


def test_training_fits_a_head_the_scorer_runs(tmp_path: Path) -> None:
    """train() end to end on 60 CLIVE photos: features (then the cache), CV choice, files, and the scorer
    loading what it wrote (the test's own head: the store would refuse it, the pinned hash is the shipped one)."""
    from iqaflow.config.default_nr import load_recipe
    from iqaflow.models.registry import create_scorer
    from iqaflow.tasks.learn import default_nr_train

    clive = SHARED_DATA / "clive-subset"
    rows = list(csv.DictReader(open(clive / "mos.csv")))[:60]
    small = tmp_path / "mos.csv"
    with open(small, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["image", "mos"])
        w.writeheader()
        w.writerows({"image": r["image"], "mos": r["mos"]} for r in rows)
    recipe = load_recipe(None, {
        "train": [{"name": "clive-60", "mos": str(small), "images": str(clive / "images"), "scale": 0.01,
                   "notice": str(clive / "README.txt")}],
        "views": {"crops": 1}, "regressor": {"pca": 16, "c": [1.0, 3.0], "gamma": [0.5], "cv_sample": 60},
        "cache": str(tmp_path / "cache"), "out": str(tmp_path / "out"),
    })
    lines: list[str] = []
    result = default_nr_train.train(recipe, on_line=lines.append)
    assert result.n_images == 60 and 0 < result.n_support <= 60 and len(list((tmp_path / "cache").glob("*.npy"))) == 1
    assert sum("CV SRCC" in line for line in lines) == 2
    head = torch.load(result.path, weights_only=True)
    assert int(head["crops"]) == 1 and "Ghadiyaram" in (tmp_path / "out" / "iqaflow_nr.NOTICE").read_text()
    scorer = create_scorer("iqaflow_nr")
    scorer.load(torch.load(PACKAGED_DIR / BACKBONE_FILE, weights_only=True), head)
    assert scorer.views == ViewSet(crops=1)
    from PIL import Image

    imgs = [np.asarray(Image.open(clive / "images" / r["image"]).convert("RGB"), dtype=np.float32) / 255
            for r in rows[:8]]
    fitted = scorer.score(imgs)[:, 0]
    assert srcc(fitted, np.array([float(r["mos"]) for r in rows[:8]])) > 0.5  # its own training images


def test_curation_cut_is_learnt_on_one_half_and_checked_on_the_other() -> None:
    """Against a direct count: the cut catches >= 80% of the learning half's bad images and no fewer."""
    from iqaflow.tasks.learn.evaluate_default import BAD_BELOW, curation

    rng = np.random.default_rng(3)
    mos = rng.uniform(0, 1, 400)
    scores = mos + rng.normal(0, 0.15, 400)
    c = curation("m", scores, mos, seed=7)
    order = np.random.default_rng(7).permutation(400)
    learn, check = order[:200], order[200:]
    bad_learn = scores[learn][mos[learn] < BAD_BELOW]
    assert (bad_learn <= c.threshold).mean() >= 0.8 > (bad_learn < c.threshold).mean()
    rejected, bad = scores[check] <= c.threshold, mos[check] < BAD_BELOW
    assert c.precision == pytest.approx((rejected & bad).sum() / rejected.sum())
    assert c.recall == pytest.approx((rejected & bad).sum() / bad.sum())
    assert c.rejected == pytest.approx(rejected.mean())
