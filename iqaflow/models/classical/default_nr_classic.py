"""``iqaflow_nr_classic``: the default NR scorer before ``iqaflow_nr`` (MobileNet features); trained here, shipped.

Kept because it needs no network and is several times faster on one core; ``iqaflow_nr`` agrees with
people much better on photos it was not trained on (README, "The default scorer").

Quality features (``quality_features``) -> a KRR + MLP ensemble fitted to the human scores of the
CLIVE subset after RankIQA-style pre-training on synthetic distortions (``default_nr_model``). The
weights file ``iqaflow/weights/iqaflow_nr_classic.pt`` (~0.5 MB) is made by ``iqaflow train-default --config
configs/default_nr_classic.yaml``; it carries the LIVE In the Wild database's licence notice, which must stay
with it (also in ``iqaflow/weights/NOTICE``). A weights store that holds a file of the same name
takes precedence, but only if it is this exact file: the hash below is pinned.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from iqaflow.errors import WeightsError
from iqaflow.models.base import Scorer, ScorerInfo, WeightSpec
from iqaflow.models.classical.quality_features import FEATURES_VERSION, N_FEATURES, quality_features
from iqaflow.models.deep import default_nr_model as model_maths
from iqaflow.models.registry import register
from iqaflow.models.weights import PACKAGED_DIR, WeightsStore, get_store

WEIGHTS_FILE = "iqaflow_nr_classic.pt"
# sha256 of the shipped iqaflow/weights/iqaflow_nr_classic.pt; `iqaflow train-default` prints the hash it wrote.
SHIPPED_SHA256 = "7bedfbafae31f4dff26616e56219916033ce90f1d17d0a44ebc2b25ab590e81a"


def check_state(state: dict, origin: str) -> dict[str, np.ndarray]:
    """The model arrays of a loaded state dict, after checking it was made for these features."""
    missing = [k for k in ("features_version", "n_features", "mos_mean", "norm_quantiles") if k not in state]
    if missing:
        raise WeightsError(f"{origin}: not an iqaflow_nr_classic model (missing {missing}). "
                           "Fix: produce it with `iqaflow train-default`")
    version, n = int(state["features_version"]), int(state["n_features"])
    if version != FEATURES_VERSION or n != N_FEATURES:
        raise WeightsError(
            f"{origin}: made for quality features v{version} ({n} values), this iqaflow computes "
            f"v{FEATURES_VERSION} ({N_FEATURES}). Fix: retrain with `iqaflow train-default --config "
            "configs/default_nr_classic.yaml`"
        )
    return model_maths.from_state({k: v for k, v in state.items() if k != "notice"})


@register
class IqaflowNRClassic(Scorer):
    info = ScorerInfo(
        name="iqaflow_nr_classic",
        kind="nr",
        higher_is_better=True,
        score_range=(0.0, 100.0),
        description="The former default NR quality on the MOS scale (0 bad - 100 excellent): NSS, LBP texture, "
        "sharpness/noise, exposure, colour and blockiness features -> KRR+MLP trained on the CLIVE subset. "
        "Faster than iqaflow_nr, less accurate on unseen photos. Shipped; needs no download.",
        colour="rgb",
        size_policy="resize",
        batchable=True,
        weights=(WeightSpec(WEIGHTS_FILE, sha256=SHIPPED_SHA256),),
    )

    def __init__(self) -> None:
        super().__init__()
        self._model: dict[str, np.ndarray] | None = None

    @classmethod
    def make_test_weights(cls, store: WeightsStore, seed: int = 0) -> None:
        """The pinned hash admits only the shipped file, so the contract suite gets a copy of it: made
        here by `iqaflow train-default`, never downloaded."""
        del seed
        shipped = PACKAGED_DIR / WEIGHTS_FILE
        if not shipped.is_file():
            raise WeightsError(f"shipped weights {str(shipped)!r} are missing. Fix: reinstall iqaflow or run "
                               "`iqaflow train-default --config configs/default_nr_classic.yaml`")
        store.put_bytes(WEIGHTS_FILE, shipped.read_bytes())

    def setup(self, device: str = "cpu") -> None:
        super().setup(device)
        spec = self.info.weights[0]
        self._model = check_state(get_store().load_state_dict(spec), spec.filename)

    def score(self, images: Sequence[np.ndarray]) -> np.ndarray:
        if self._model is None:
            raise RuntimeError("scorer 'iqaflow_nr_classic' has no parameters loaded; call setup() first "
                               "(create_scorer does)")
        if not images:
            return np.empty((0, 1))
        feats = np.stack([quality_features(img) for img in images])
        return model_maths.predict(feats, self._model)[:, None]
