"""Units of ``iqaflow train-default`` for ``iqaflow_nr``: rated sets, backbone features (cached), the fit.

Features are computed through the scorer's own network (``DefaultNrNet``: views, MobileNet, pooling) on
images decoded by the pipeline's ``decode``, so what is fitted is what ``iqaflow score`` computes. All six
views are computed once per image and cached; a view set with fewer crops takes the first ones.
The regressor is scikit-learn's ``SVR`` (training only; the scorer runs the fitted arrays in torch).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from iqaflow.config.default_nr import RatedSource, RegressorSettings
from iqaflow.errors import ConfigError
from iqaflow.evaluation.metrics import srcc
from iqaflow.models.weights import MANIFEST

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]
ALL_CROPS = 5


@dataclass
class RatedSet:
    name: str
    paths: list[str]
    mos: np.ndarray  # 0-1, higher is better


def read_source(src: RatedSource) -> RatedSet:
    """The CSV's images and MOS (scaled to 0-1). Names are matched to files case-insensitively: BIQ2021's
    CSV says ``.jpg`` where one file on disk is ``.JPG``."""
    root = Path(src.images) if src.images else Path(src.mos).parent
    with open(src.mos, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        cols = {c.strip().lower(): c for c in reader.fieldnames or [] if c}
        key = cols.get("image") or cols.get("image name") or cols.get("path")
        if key is None or "mos" not in cols:
            raise ConfigError(f"{src.mos!r}: expected columns image (or 'Image Name' or path) and mos, got "
                              f"{reader.fieldnames}. Fix: rename the columns")
        rows = [r for r in reader if (r.get(key) or "").strip()]
    on_disk = {n.lower(): n for n in os.listdir(root)} if root.is_dir() else {}
    paths, missing = [], []
    for r in rows:
        name = r[key].strip()
        found = name if (root / name).is_file() else on_disk.get(name.lower())
        (paths.append(str(root / found)) if found else missing.append(name))
    if missing:
        raise ConfigError(f"{src.name}: {len(missing)} image(s) of {src.mos!r} not in {str(root)!r}, e.g. "
                          f"{missing[:3]}. Fix: point 'images' at the folder that holds them")
    try:
        mos = np.array([float(r[cols["mos"]]) for r in rows]) * src.scale
    except ValueError as exc:
        raise ConfigError(f"{src.mos!r}: a mos value is not a number ({exc})") from None
    return RatedSet(src.name, paths, mos)


def _cache_key(paths: Sequence[str], backbone_sha: str, crop_side: int) -> str:
    h = hashlib.sha256(f"v1|{backbone_sha}|{crop_side}".encode())
    for p in paths:
        st = os.stat(p)
        h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def view_features(
    paths: Sequence[str], graph: dict[str, Any], backbone_sha: str, crop_side: int = 512, batch: int = 16,
    cache: str | None = None, on_progress: Progress | None = None,
) -> np.ndarray:
    """Per-view pooled features ``(N, 6, 1920)`` (float16: the cache is 23 kB an image) of every path."""
    key = _cache_key(paths, backbone_sha, crop_side)
    cached = Path(cache) / f"views-{key}.npy" if cache else None
    if cached is not None and cached.is_file():
        log.info("features of %d images from the cache %s", len(paths), cached)
        return np.load(cached)
    import torch

    from iqaflow.models.colour import convert
    from iqaflow.models.deep.nets.mobilenet_views import DIM, MobileNetViews, ViewSet, make_views
    from iqaflow.models.device import native_bf16
    from iqaflow.tasks.decode import DecodeFailure, decode

    net = MobileNetViews(graph).eval()
    if native_bf16():  # as the scorer runs it (IqaflowNR.load)
        net.to(torch.bfloat16)
    views = ViewSet(crops=ALL_CROPS, crop_side=crop_side)
    out = np.empty((len(paths), views.count, DIM), dtype=np.float16)
    with torch.inference_mode():
        for start in range(0, len(paths), batch):
            stacks = []
            for p in paths[start : start + batch]:
                try:
                    with open(p, "rb") as fh:
                        img = convert(decode(fh.read()).pixels, "rgb")
                except (OSError, DecodeFailure) as exc:
                    raise ConfigError(f"cannot read rated image {p!r}: {exc}. Fix: check the CSV and the "
                                      "images folder") from None
                x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).permute(2, 0, 1)[None]
                stacks.append(make_views(x, views))
            out[start : start + len(stacks)] = net(torch.cat(stacks)).float().numpy()
            if on_progress is not None:
                on_progress(start + len(stacks), len(paths))
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp.npy")
        np.save(tmp, out)
        tmp.replace(cached)
    return out


def pooled(per_view: np.ndarray, crops: int) -> np.ndarray:
    """``(N, 6, D)`` -> ``(N, 2D)`` for a view set of ``crops`` crops (``pool_views`` on the first views)."""
    import torch

    from iqaflow.models.deep.nets.mobilenet_views import pool_views

    return pool_views(torch.from_numpy(per_view[:, : 1 + crops].astype(np.float32))).numpy().astype(np.float64)


@dataclass
class Fitted:
    state: dict[str, Any]
    c: float
    gamma: float
    cv_srcc: dict[tuple[float, float], float] = field(default_factory=dict)
    n_support: int = 0


def _svr(c: float, gamma: float, epsilon: float) -> Any:
    from sklearn.svm import SVR

    return SVR(kernel="rbf", C=c, gamma=gamma, epsilon=epsilon, cache_size=1000)


def fit_head(x: np.ndarray, y: np.ndarray, settings: RegressorSettings, seed: int,
             on_step: Callable[[str], None] | None = None) -> Fitted:
    """Standardise, PCA, choose C and gamma by k-fold SRCC on a seeded sample of ``x``, refit on all of it."""
    from iqaflow.models.deep.nets.kernel_head import head_state

    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = (x - mean) / std
    k = min(settings.pca, z.shape[1], z.shape[0])
    # Rows: principal directions, rounded to the float16 they are shipped in before anything is fitted on them.
    components = np.linalg.svd(z, full_matrices=False)[2][:k].astype(np.float16).astype(np.float64)
    p = z @ components.T
    # gamma as scikit-learn's 'scale' does: relative to the features' total variance.
    unit = 1.0 / float(p.var(axis=0).sum())
    t_mean, t_std = float(y.mean()), float(y.std())
    t = (y - t_mean) / t_std
    rng = np.random.default_rng(seed)
    sample = rng.permutation(len(p))[: settings.cv_sample]
    folds = np.array_split(rng.permutation(sample), settings.cv_folds)
    scores: dict[tuple[float, float], float] = {}
    for c in settings.c:
        for g in settings.gamma:
            fold_srcc = []
            for f in range(settings.cv_folds):
                test = folds[f]
                train = np.concatenate([folds[j] for j in range(settings.cv_folds) if j != f])
                model = _svr(c, g * unit, settings.epsilon).fit(p[train], t[train])
                fold_srcc.append(srcc(model.predict(p[test]), t[test]))
            scores[(c, g)] = float(np.mean(fold_srcc))
            if on_step is not None:
                on_step(f"C={c:g} gamma={g:g}/var: CV SRCC {scores[(c, g)]:.4f}")
    best_c, best_g = max(scores, key=lambda cg: scores[cg])
    model = _svr(best_c, best_g * unit, settings.epsilon).fit(p, t)
    state = head_state(mean, std, components, model.support_vectors_, model.dual_coef_.reshape(-1),
                       float(model.intercept_[0]), best_g * unit, t_mean, t_std)
    return Fitted(state, best_c, best_g, scores, len(model.support_))


def predict(state: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """The shipped head's MOS (0-100) for pooled features, through the scorer's own torch module."""
    import torch

    from iqaflow.models.deep.nets.kernel_head import KernelHead

    with torch.inference_mode():
        return KernelHead(state)(torch.from_numpy(x.astype(np.float32))).double().numpy()


def write_file(data: bytes, out: str | Path, filename: str) -> str:
    """Write one shipped file atomically and record its sha256 in the folder's manifest; returns the hash."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(data).hexdigest()
    tmp = out / f".{filename}.tmp"
    tmp.write_bytes(data)
    tmp.replace(out / filename)
    manifest_path = out / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    manifest[filename] = digest
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    log.info("wrote %s (%d bytes, sha256 %s)", out / filename, len(data), digest)
    return digest


def state_bytes(state: dict[str, Any]) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()
