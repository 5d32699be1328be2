"""The default NR scorer: shipped weights (hash, notice, loading), its maths, and that its recipe beats the
Laplacian baseline on a held-out split of the CLIVE subset (re-trained here: the shipped model saw all 400)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, SHARED_DATA

from iqaflow.errors import ConfigError, WeightsError
from iqaflow.evaluation import synth
from iqaflow.evaluation.crossval import content_folds, fold_agreement
from iqaflow.models.classical.default_nr_classic import SHIPPED_SHA256, WEIGHTS_FILE, check_state
from iqaflow.models.classical.quality_features import N_FEATURES, quality_features
from iqaflow.models.colour import convert
from iqaflow.models.deep import default_nr_model as maths
from iqaflow.models.weights import MANIFEST, PACKAGED_DIR, WeightsStore, configure_store, sha256_file

CLIVE = SHARED_DATA / "clive-subset"
RECIPE = REPO / "configs" / "default_nr_classic.yaml"


@pytest.fixture
def empty_store(tmp_path: Path):  # noqa: ANN201
    store = configure_store(str(tmp_path / "empty-store"))
    yield store
    configure_store(None)


def _images() -> list[np.ndarray]:
    crops = [img for _, img in synth.random_crops(synth.skimage_images(), 3, 256, seed=1)]
    return [crops[0], synth.blur(crops[0], 3.0), synth.noise(crops[1], 25.0), synth.jpeg(crops[2], 5)]


def test_shipped_weights_are_pinned_listed_small_and_carry_the_licence() -> None:
    path = PACKAGED_DIR / WEIGHTS_FILE
    digest = sha256_file(path)
    assert digest == SHIPPED_SHA256
    assert json.loads((PACKAGED_DIR / MANIFEST).read_text())[WEIGHTS_FILE] == digest
    assert path.stat().st_size < 4_000_000
    state = torch.load(path, weights_only=True)
    notice = (PACKAGED_DIR / "iqaflow_nr_classic.NOTICE").read_text()
    for text in (state["notice"], notice):
        assert "COPYRIGHT NOTICE STARTS WITH THIS LINE" in text and "Ghadiyaram" in text
        assert "The University of Texas at Austin" in text
    check_state(state, "shipped")  # made for the features this code computes
    assert int(state["n_images"]) == 400


def test_scorer_loads_from_the_package_with_an_empty_store(empty_store: WeightsStore) -> None:
    from iqaflow.models.registry import create_scorer

    scorer = create_scorer("iqaflow_nr_classic")
    scores = scorer.score([convert(img, "rgb") for img in _images()])[:, 0]
    assert scores.shape == (4,) and np.isfinite(scores).all()
    assert ((scores >= 0) & (scores <= 100)).all()
    assert scores[0] > scores[1] and scores[0] > scores[3]  # blur and heavy JPEG lower the score of the same crop


def test_a_different_file_of_the_same_name_is_refused(empty_store: WeightsStore) -> None:
    from iqaflow.models.registry import create_scorer

    empty_store.put_bytes(WEIGHTS_FILE, b"not the shipped weights")
    with pytest.raises(WeightsError, match="sha256"):
        create_scorer("iqaflow_nr_classic")


def test_features_are_deterministic_finite_and_nan_when_too_small() -> None:
    img = convert(_images()[0], "rgb")
    a, b = quality_features(img), quality_features(img.copy())
    assert a.shape == (N_FEATURES,) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    gray = quality_features(convert(_images()[0][:, :, 1], "rgb"))
    assert np.isfinite(gray).all()
    assert np.isnan(quality_features(img[:20, :20])).all()


def test_fit_is_deterministic_and_round_trips_as_plain_tensors(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 12))
    y = 50 + 10 * x[:, 0] + rng.normal(size=40)
    x_syn = rng.normal(size=(12, 12))
    pairs = maths.ranking_pairs(np.repeat([0, 1], 6), np.array(["pristine", "a", "a", "b", "b", "b"] * 2),
                                np.array([0, 1, 2, 1, 2, 3] * 2))
    assert len(pairs) == 2 * (3 + 6)  # per content: chain a (3 pairs) and chain b (6 pairs)
    s = maths.FitSettings(mlp_members=2, mlp_epochs=30, pretrain_steps=5, pretrain_pairs=16)
    m1, m2 = maths.fit(x, y, s, x_syn, pairs), maths.fit(x, y, s, x_syn, pairs)
    for k in m1:
        np.testing.assert_array_equal(m1[k], m2[k])
    torch.save(maths.to_state(m1, s, 1, 12), tmp_path / "m.pt")
    back = maths.from_state(torch.load(tmp_path / "m.pt", weights_only=True))
    np.testing.assert_allclose(maths.predict(x, back), maths.predict(x, m1))
    assert np.corrcoef(maths.predict(x, m1), y)[0, 1] > 0.9
    x_nan = x[:2].copy()
    x_nan[0] = np.nan
    assert np.isnan(maths.predict(x_nan, m1)[0]) and np.isfinite(maths.predict(x_nan, m1)[1])


def test_content_folds_partition_and_respect_groups() -> None:
    folds = content_folds(23, 5, seed=3)
    assert sorted(np.concatenate(folds).tolist()) == list(range(23))
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    groups = np.repeat(np.arange(8), 3)
    for test in content_folds(24, 4, seed=0, groups=groups):
        train = np.setdiff1d(np.arange(24), test)
        assert not set(groups[test]) & set(groups[train])
    assert content_folds(23, 5, seed=3)[0].tolist() == folds[0].tolist()


def test_recipe_loads_and_rejects_unknown_keys(tmp_path: Path) -> None:
    from iqaflow.config.default_nr_classic import load_recipe

    recipe = load_recipe(RECIPE, {"mos": str(CLIVE / "mos.csv"), "images": str(CLIVE / "images"),
                                  "notice": str(CLIVE / "README.txt"), "evaluation": {"baseline_pristine": None}})
    assert recipe.evaluation.folds == 5 and recipe.seed == 0 and recipe.fit_settings().krr_weight == 0.5
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"mos: {CLIVE / 'mos.csv'}\nmodel: {{krr_alpah: 1}}\n")
    with pytest.raises(ConfigError, match="unknown key 'model.krr_alpah'"):
        load_recipe(bad)


def test_write_weights_records_hash_and_notice(tmp_path: Path) -> None:
    from iqaflow.models.base import WeightSpec
    from iqaflow.tasks.learn.default_nr_classic import write_weights

    digest = write_weights({"a": torch.zeros(2), "notice": "licence"}, tmp_path, "the notice\n")
    assert json.loads((tmp_path / MANIFEST).read_text()) == {WEIGHTS_FILE: digest}
    assert (tmp_path / "iqaflow_nr_classic.NOTICE").read_text() == "the notice\n"
    assert WeightsStore(str(tmp_path)).local_path(WeightSpec(WEIGHTS_FILE)) == tmp_path / WEIGHTS_FILE


@pytest.mark.slow
def test_recipe_beats_the_laplacian_on_held_out_clive_images() -> None:
    """2-fold CV on 120 images with the recipe's settings (a small pre-training set to keep it quick);
    the shipped model, which saw these images, must also still rank them well (features unchanged)."""
    import cv2

    from iqaflow.config.default_nr_classic import load_recipe
    from iqaflow.models.classical.nr import laplacian_variance
    from iqaflow.tasks.learn.default_nr_classic import pristine_crops, read_rated, synthetic_set

    assert CLIVE.is_dir(), f"shared data expected beside the checkout at {CLIVE}"
    recipe = load_recipe(RECIPE, {"mos": str(CLIVE / "mos.csv"), "images": str(CLIVE / "images"),
                                  "notice": str(CLIVE / "README.txt"), "evaluation": {"baseline_pristine": None},
                                  "pretrain": {"skimage": ["astronaut", "coffee"], "crops_per_image": 1,
                                               "crop_size": 256}})
    rated = read_rated(recipe, limit=120)
    synthetic = synthetic_set(pristine_crops(recipe), [], recipe.seed)
    lap = np.array([laplacian_variance(cv2.cvtColor(quality_input, cv2.COLOR_RGB2GRAY))
                    for quality_input in map(_read, rated.paths)])
    settings = replace(recipe.fit_settings(), mlp_members=3)
    ours, base = [], []
    for test in content_folds(len(rated.mos), 2, seed=0):
        train = np.setdiff1d(np.arange(len(rated.mos)), test)
        model = maths.fit(rated.features[train], rated.mos[train], settings, synthetic.features, synthetic.pairs())
        pred = maths.predict(rated.features[test], model)
        assert ((pred >= 0) & (pred <= 100)).all()
        ours.append(fold_agreement(pred, rated.mos[test])["srcc"])
        base.append(fold_agreement(lap[test], rated.mos[test])["srcc"])
    assert np.mean(ours) > 0.55 and np.mean(ours) > np.mean(base) + 0.1, (ours, base)
    shipped = check_state(torch.load(PACKAGED_DIR / WEIGHTS_FILE, weights_only=True), "shipped")
    in_sample = fold_agreement(maths.predict(rated.features, shipped), rated.mos)["srcc"]
    assert in_sample > 0.85, in_sample


def _read(path: str) -> np.ndarray:
    from iqaflow.tasks.learn.default_nr_classic import decode_rgb

    return decode_rgb(path)
