"""The NSS scorers: ``niqe`` and ``brisque`` with the published models, ``*_fitted`` with the user's own.

``niqe`` and ``brisque`` use the published models shipped in ``iqaflow/weights``; the ``*_fitted``
variants read what ``iqaflow fit niqe|brisque`` writes from the user's own images.

``niqe`` is the LIVE release's computequality.m with its pristine model (gray by MATLAB's rgb2gray).
Its one departure: flat 7x7 windows give MSCN coefficients of exactly 0 here, where MATLAB leaves
~1e-14 rounding residue whose sign the AGGD side counts then depend on. Images without flat windows
match the release to float32 precision (~1e-4); on images with large flat areas the release's value
moves by up to ~0.6% with that residue, which cannot be reproduced without MATLAB's arithmetic.
``brisque`` is OpenCV's implementation with OpenCV's LIVE model (see ``brisque_live``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from iqaflow.models.base import PerImageScorer, Scorer, ScorerInfo, WeightSpec
from iqaflow.models.classical import brisque_live
from iqaflow.models.classical.matlab_compat import gray255
from iqaflow.models.classical.nss import (
    NIQE_PATCH,
    brisque_features,
    niqe_distance,
    niqe_patch_features,
    niqe_patch_features_255,
    rbf_predict,
)
from iqaflow.models.registry import register
from iqaflow.models.weights import ShippedWeights, WeightsStore, get_store


def _load(spec: WeightSpec) -> dict[str, np.ndarray]:
    state = get_store().load_state_dict(spec)
    return {k: v.double().numpy() for k, v in state.items()}


def _need_setup(name: str) -> RuntimeError:
    return RuntimeError(f"scorer {name!r} has no parameters loaded; call setup() first (create_scorer does)")


NIQE_PARAMS = WeightSpec("niqe_image_params.mat", "c0f359a92d32de06002b81d1446e8a060a31de46ae9cce2c4d781405626727eb")
BRISQUE_MODEL = WeightSpec("brisque_model_live.yml", "4c44c7eec9e5139830c0bb0e4a044c9cd351ba5bbc9e3798beca3243e2782ff4")
BRISQUE_RANGE = WeightSpec("brisque_range_live.yml", "a18427f4f7ad087524bd0d63389649a3899b51ca6d44a4d5f8d8171f1f914a9c")


@register
class Niqe(ShippedWeights, PerImageScorer):
    """The published NIQE: the LIVE release's pristine model and its computequality.m, step for step."""

    info = ScorerInfo(
        name="niqe",
        kind="nr",
        higher_is_better=False,
        score_range=(0.0, None),
        description="NIQE (Mittal 2013) with the published LIVE pristine model (shipped): distance of 96x96-patch "
        "NSS statistics from natural images; lower is better. NaN below 96x96 pixels.",
        colour="rgb",  # gray is made here as MATLAB's rgb2gray does (8-bit, rounded)
        weights=(NIQE_PARAMS,),
    )

    def __init__(self) -> None:
        super().__init__()
        self._mu: np.ndarray | None = None
        self._cov = np.empty(0)

    def setup(self, device: str = "cpu") -> None:
        from scipy.io import loadmat

        super().setup(device)
        params = loadmat(get_store().local_path(self.info.weights[0]))
        self._mu, self._cov = params["pop_mu"].ravel().astype(np.float64), params["pop_cov"].astype(np.float64)

    def score_one(self, image: np.ndarray) -> tuple[float, ...]:
        if self._mu is None:
            raise _need_setup(self.info.name)
        feats, _ = niqe_patch_features_255(gray255(image).astype(np.float32), NIQE_PATCH)
        return (niqe_distance(feats, self._mu, self._cov),)


@register
class NiqeFitted(PerImageScorer):
    info = ScorerInfo(
        name="niqe_fitted",
        kind="nr",
        higher_is_better=False,
        score_range=(0.0, None),
        description="NIQE with a pristine model fitted on your own images (`iqaflow fit niqe` writes "
        "niqe_pristine.pt); lower is better. NaN below the patch size.",
        colour="gray",
        weights=(WeightSpec("niqe_pristine.pt"),),
    )

    def __init__(self) -> None:
        super().__init__()
        self._model: dict[str, np.ndarray] | None = None

    @classmethod
    def make_test_weights(cls, store: WeightsStore, seed: int = 0) -> None:
        from iqaflow.models.classical.nss_fit import fit_niqe, test_images

        images = test_images(seed)
        images += [np.ascontiguousarray(im[:, ::-1]) for im in images]  # mirrors: 2x the patches for 36-d
        store.put_state_dict(cls.info.weights[0].filename, fit_niqe(images))

    def setup(self, device: str = "cpu") -> None:
        super().setup(device)
        self._model = _load(self.info.weights[0])

    def score_one(self, image: np.ndarray) -> tuple[float, ...]:
        if self._model is None:
            raise _need_setup(self.info.name)
        feats, _ = niqe_patch_features(image, int(self._model["patch"]))
        return (niqe_distance(feats, self._model["mu"], self._model["cov"]),)


@register
class Brisque(ShippedWeights, PerImageScorer):
    """The published BRISQUE: the LIVE SVR OpenCV ships, on OpenCV's features (``brisque_live``)."""

    info = ScorerInfo(
        name="brisque",
        kind="nr",
        higher_is_better=False,
        score_range=(0.0, 100.0),
        description="BRISQUE (Mittal 2012) with the published LIVE model as OpenCV ships and computes it (shipped): "
        "predicted LIVE DMOS, 0 best to 100 worst. NaN below 16x16 pixels.",
        colour="rgb",  # gray is made here as OpenCV's cvtColor does on 8-bit pixels
        weights=(BRISQUE_MODEL, BRISQUE_RANGE),
    )

    def __init__(self) -> None:
        super().__init__()
        self._svr: brisque_live.LiveSvr | None = None

    def setup(self, device: str = "cpu") -> None:
        super().setup(device)
        model, ranges = (get_store().local_path(spec) for spec in self.info.weights)
        self._svr = brisque_live.LiveSvr.from_files(model, ranges)

    def score_one(self, image: np.ndarray) -> tuple[float, ...]:
        if self._svr is None:
            raise _need_setup(self.info.name)
        gray = brisque_live.gray_u8(image)
        if min(gray.shape) < 16:
            return (float("nan"),)
        return (float(self._svr.score(brisque_live.features(gray))[0]),)


@register
class BrisqueFitted(Scorer):
    info = ScorerInfo(
        name="brisque_fitted",
        kind="nr",
        higher_is_better=False,
        score_range=(None, None),
        description="BRISQUE's MATLAB features with a regressor fitted on synthetic distortions of your pristine "
        "images (`iqaflow fit brisque` writes brisque_model.pt): about 0 pristine to 100 severe; lower is better.",
        colour="gray",
        weights=(WeightSpec("brisque_model.pt"),),
    )

    def __init__(self) -> None:
        super().__init__()
        self._model: dict[str, np.ndarray] | None = None

    @classmethod
    def make_test_weights(cls, store: WeightsStore, seed: int = 0) -> None:
        from iqaflow.models.classical.nss_fit import fit_brisque, test_crops

        store.put_state_dict(cls.info.weights[0].filename, fit_brisque(test_crops(seed), seed=seed))

    def setup(self, device: str = "cpu") -> None:
        super().setup(device)
        self._model = _load(self.info.weights[0])

    def score(self, images: Sequence[np.ndarray]) -> np.ndarray:
        if self._model is None:
            raise _need_setup(self.info.name)
        if not images:
            return np.empty((0, 1))
        feats = np.stack([brisque_features(img) for img in images])
        out = np.full((len(images), 1), np.nan)
        ok = ~np.isnan(feats).any(axis=1)
        if ok.any():
            out[ok, 0] = rbf_predict(feats[ok], self._model)
        return out
