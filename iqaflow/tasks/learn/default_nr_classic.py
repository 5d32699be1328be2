"""Units of ``iqaflow train-default``: read rated images and pristine photos, compute features, fit, ship.

The maths is ``iqaflow.models.classical.quality_features`` and ``iqaflow.models.deep.default_nr_model``; this module
feeds them files and writes the result: ``iqaflow_nr_classic.pt`` (a state dict of tensors plus the dataset's
licence notice), its sha256 in ``manifest.json`` beside it, and ``NOTICE``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iqaflow.config.default_nr_classic import DefaultNrRecipe
from iqaflow.errors import ConfigError
from iqaflow.models.classical.default_nr_classic import WEIGHTS_FILE
from iqaflow.models.classical.quality_features import FEATURES_VERSION, N_FEATURES, quality_features
from iqaflow.models.colour import convert
from iqaflow.models.deep import default_nr_model as maths

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]
NOTICE_FILE = "iqaflow_nr_classic.NOTICE"


@dataclass
class RatedSet:
    paths: list[str]
    mos: np.ndarray
    features: np.ndarray


@dataclass
class SyntheticSet:
    features: np.ndarray
    content: np.ndarray
    kind: np.ndarray
    level: np.ndarray

    def pairs(self) -> np.ndarray:
        return maths.ranking_pairs(self.content, self.kind, self.level)


def decode_rgb(path: str) -> np.ndarray:
    """A file as the scoring pipeline sees it: decoded (EXIF orientation applied), float RGB in [0, 1]."""
    import fsspec

    from iqaflow.tasks.decode import DecodeFailure, decode

    try:
        with fsspec.open(path, "rb") as fh:
            return convert(decode(fh.read()).pixels, "rgb")
    except (OSError, DecodeFailure) as exc:
        raise ConfigError(f"cannot read rated image {path!r}: {exc}. Fix: check the CSV and the images "
                          "folder") from None


def read_rated(recipe: DefaultNrRecipe, on_progress: Progress | None = None, limit: int | None = None) -> RatedSet:
    """The CSV's images (in CSV order, at most ``limit``), their MOS and their quality features."""
    from iqaflow.tasks.learn.evaluate import read_rated as read_csv

    rated = read_csv(recipe.mos, recipe.images)
    paths, mos = rated.paths[:limit], rated.mos[:limit]
    feats = np.empty((len(paths), N_FEATURES))
    for i, p in enumerate(paths):
        feats[i] = quality_features(decode_rgb(p))
        if on_progress is not None:
            on_progress(i + 1, len(paths))
    return RatedSet(list(paths), np.asarray(mos, dtype=np.float64), feats)


def _skimage(name: str) -> np.ndarray:
    from skimage import data

    if name.startswith("motorcycle_"):
        left, right, _ = data.stereo_motorcycle()
        img = left if name.endswith("left") else right
    else:
        img = getattr(data, name)()
    return img if img.ndim == 3 else np.stack([img] * 3, axis=2)


def pristine_crops(recipe: DefaultNrRecipe) -> list[tuple[str, np.ndarray]]:
    """Seeded square crops (uint8 RGB) of the recipe's pristine photos, named ``source#k``."""
    from iqaflow.tasks.learn.train import load_pristine

    src = recipe.pretrain
    images = [(name, _skimage(name)) for name in src.skimage]
    for folder in src.folders:
        images += [(f"{folder}/{n}", img) for n, img in load_pristine(folder)]
    rng = np.random.default_rng(recipe.seed)
    crops = []
    for name, img in images:
        h, w = img.shape[:2]
        side = min(src.crop_size, h, w)
        for k in range(src.crops_per_image):
            y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            crops.append((f"{name}#{k}", np.ascontiguousarray(img[y : y + side, x : x + side])))
    return crops


def synthetic_set(
    crops: Sequence[tuple[str, np.ndarray]], distortions: Sequence[str], seed: int, on_progress: Progress | None = None
) -> SyntheticSet:
    """Features of every crop pristine and at each level of each catalogue distortion (seeded per crop)."""
    from iqaflow.evaluation.distortions import N_LEVELS, select

    kinds = select(distortions)
    total = len(crops) * (1 + len(kinds) * N_LEVELS)
    feats, content, kind, level = [], [], [], []
    for c, (_, crop) in enumerate(crops):
        rng = np.random.default_rng([seed, c])
        versions = [("pristine", 0, crop)] + [(d.name, lv, d.at(crop, lv, rng)) for d in kinds
                                              for lv in range(1, N_LEVELS + 1)]
        for name, lv, img in versions:
            feats.append(quality_features(convert(img, "rgb")))
            content.append(c)
            kind.append(name)
            level.append(lv)
            if on_progress is not None:
                on_progress(len(feats), total)
    return SyntheticSet(np.array(feats), np.array(content), np.array(kind), np.array(level))


def fit_state(
    recipe: DefaultNrRecipe, rated: RatedSet, synthetic: SyntheticSet | None, notice: str | None,
    on_member: Callable[[int], None] | None = None,
) -> dict:
    """Fit on every rated image; the state dict carries the recipe's settings and the licence notice."""
    import torch

    settings = recipe.fit_settings()
    syn_x, pairs = (synthetic.features, synthetic.pairs()) if synthetic is not None else (None, None)
    model = maths.fit(rated.features, rated.mos, settings, syn_x, pairs, on_member)
    state = maths.to_state(model, settings, FEATURES_VERSION, N_FEATURES)
    state["n_images"] = torch.tensor(len(rated.mos))
    if notice:
        state["notice"] = notice
    return state


def read_notice(recipe: DefaultNrRecipe) -> str | None:
    """The dataset's licence file, default ``README.txt`` beside the CSV (CLIVE's carries its notice)."""
    path = Path(recipe.notice) if recipe.notice else Path(recipe.mos).parent / "README.txt"
    return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None


def notice_text(dataset_notice: str | None, recipe_name: str = "configs/default_nr_classic.yaml") -> str:
    head = (
        "iqaflow_nr_classic.pt: the weights of iqaflow's former default NR scorer (iqaflow_nr_classic), produced\n"
        f"by `iqaflow train-default --config {recipe_name}`. They were fitted to human quality scores of\n"
        "images from the LIVE In the Wild Image Quality Challenge Database; its licence notice follows and\n"
        "must stay with any copy of these weights.\n\n"
    )
    return head + (dataset_notice or "(dataset notice not supplied)\n")


def write_weights(state: dict, out: str | Path, notice: str) -> str:
    """Write the weights, record their sha256 in the folder's manifest and write NOTICE; returns the hash."""
    from iqaflow.tasks.learn.default_nr import state_bytes, write_file

    digest = write_file(state_bytes(state), out, WEIGHTS_FILE)
    (Path(out) / NOTICE_FILE).write_text(notice, encoding="utf-8")
    return digest
