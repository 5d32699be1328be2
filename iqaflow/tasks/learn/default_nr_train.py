"""``iqaflow train-default`` for ``iqaflow_nr``: features of every rated source, one fit, the shipped files.

A plain function, not a Prefect flow: it is one process on one machine, and the feature cache (not a
shard plan) is what makes a re-run cheap. Writes ``iqaflow_nr.pt`` (the head, with the view set and the
backbone's hash it was fitted on), its sha256 in ``manifest.json`` and ``iqaflow_nr.NOTICE``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from iqaflow.config.default_nr import DefaultNrRecipe, RatedSource, head_file
from iqaflow.models.deep.default_nr import BACKBONE_FILE, IqaflowNR
from iqaflow.tasks.learn import default_nr as t

SourceProgress = Callable[[str, int, int], None]
NOTICE_SUFFIX = ".NOTICE"


@dataclass
class TrainResult:
    path: str
    sha256: str
    n_images: int
    n_support: int
    c: float
    gamma: float


def backbone() -> tuple[dict[str, Any], str]:
    """The shipped backbone's graph state and sha256, through the weights store (hash-checked)."""
    from iqaflow.models.weights import get_store, sha256_file

    spec = IqaflowNR.info.weights[0]
    store = get_store()
    return store.load_state_dict(spec), sha256_file(store.local_path(spec))


def source_features(recipe: DefaultNrRecipe, src: RatedSource, graph: dict[str, Any], backbone_sha: str,
                    on_progress: SourceProgress | None = None) -> tuple[t.RatedSet, np.ndarray]:
    """A rated source and its per-view features ``(N, 6, 1920)`` (cached)."""
    rated = t.read_source(src)
    feats = t.view_features(rated.paths, graph, backbone_sha, recipe.views.crop_side, recipe.batch, recipe.cache,
                            None if on_progress is None else (lambda i, n: on_progress(src.name, i, n)))
    return rated, feats


def notice_text(recipe: DefaultNrRecipe, recipe_name: str) -> str:
    parts = [
        f"{head_file(recipe.scorer)}: the regressor of iqaflow's default NR scorer ({recipe.scorer}), produced by\n"
        f"`iqaflow train-default --config {recipe_name}`. It was fitted to human quality scores of the\n"
        f"images named below; their notices follow and must stay with any copy of this file. The backbone\n"
        f"({BACKBONE_FILE}) is Google's ImageNet MobileNet v1 under Apache-2.0 (mobilenet_v1_224.LICENSE).\n",
    ]
    for src in recipe.train:
        text = Path(src.notice).read_text(encoding="utf-8", errors="replace") if src.notice else "(no notice given)\n"
        parts.append(f"\n===== {src.name} =====\n{text}")
    return "".join(parts)


def train(recipe: DefaultNrRecipe, on_progress: SourceProgress | None = None,
          on_line: Callable[[str], None] | None = None, recipe_name: str = "configs/default_nr.yaml") -> TrainResult:
    graph, backbone_sha = backbone()
    xs, ys = [], []
    for src in recipe.train:
        rated, feats = source_features(recipe, src, graph, backbone_sha, on_progress)
        xs.append(t.pooled(feats, recipe.views.crops))
        ys.append(rated.mos)
        if on_line is not None:
            on_line(f"{src.name}: {len(rated.mos)} images")
    x, y = np.concatenate(xs), np.concatenate(ys)
    fitted = t.fit_head(x, y, recipe.regressor, recipe.seed, on_line)
    state = dict(fitted.state)
    state.update(crops=recipe.views.crops, crop_side=recipe.views.crop_side, backbone_sha256=backbone_sha,
                 n_images=len(y), sources=[s.name for s in recipe.train])
    out = head_file(recipe.scorer)
    digest = t.write_file(t.state_bytes(state), recipe.out, out)
    notice = Path(recipe.out) / f"{recipe.scorer}{NOTICE_SUFFIX}"
    notice.write_text(notice_text(recipe, recipe_name), encoding="utf-8")
    return TrainResult(str(Path(recipe.out) / out), digest, len(y), fitted.n_support, fitted.c, fitted.gamma)
