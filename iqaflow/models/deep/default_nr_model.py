"""The default NR model's maths: quality features -> MOS, as plain arrays (no pickles, no nn.Module).

Two regressors on the same quantile-normalised features, averaged in standardised-MOS units:

* kernel ridge regression with an RBF kernel (closed form, support vectors = the training images);
* a small ensemble of one-hidden-layer MLPs, each first pre-trained RankIQA-style on synthetic
  distortions of pristine images (a hinge loss asks every less-distorted version of a crop to score
  above every more-distorted one of the same type) and then fine-tuned on human scores with a
  squared error plus a pairwise ranking term.

Training uses torch (seeded, single-threaded: the result is deterministic on a given machine);
prediction is numpy. ``fit`` returns a state dict of tensors that ``torch.load(weights_only=True)``
reads back, ``predict`` turns features into scores on the MOS scale (0-100, higher is better).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import ndtri

log = logging.getLogger(__name__)

MODEL_VERSION = 1
_P_CLIP = 1e-3  # quantile probabilities are kept in [p, 1 - p]: z within about +-3.1


@dataclass(frozen=True)
class FitSettings:
    """Hyper-parameters of ``fit``; the recipe YAML sets them (``configs/default_nr_classic.yaml``)."""

    quantiles: int = 100
    krr_alpha: float = 0.1
    krr_gamma: float = 0.3  # per feature: the RBF's gamma is this / number of features
    krr_weight: float = 0.5  # ensemble weight of the KRR; the MLPs get the rest
    mlp_members: int = 5
    mlp_hidden: int = 64
    mlp_epochs: int = 400
    mlp_lr: float = 1e-3
    mlp_weight_decay: float = 1e-2
    input_dropout: float = 0.1
    hidden_dropout: float = 0.2
    rank_weight: float = 1.0
    pretrain_steps: int = 200
    pretrain_pairs: int = 2048  # pairs per pre-training step
    pretrain_margin: float = 0.5
    seed: int = 0


# -- feature normalisation ----------------------------------------------------------------------------------
def fit_normaliser(x: np.ndarray, n_quantiles: int = 100) -> dict[str, np.ndarray]:
    """Per-feature quantiles (to map onto a standard normal) and medians (to fill NaN)."""
    x = np.asarray(x, dtype=np.float64)
    median = np.nanmedian(x, axis=0)
    median = np.where(np.isfinite(median), median, 0.0)
    filled = np.where(np.isfinite(x), x, median)
    probs = np.linspace(0.0, 1.0, min(n_quantiles, len(x)))
    return {"quantiles": np.quantile(filled, probs, axis=0), "probs": probs, "median": median}


def normalise(x: np.ndarray, norm: dict[str, np.ndarray]) -> np.ndarray:
    """Features -> approximately standard-normal values via the training quantiles; NaN features take the
    training median. Linear between quantiles; a value equal to several tied quantiles takes the middle
    of their probabilities (as scikit-learn's QuantileTransformer)."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    q, p, med = norm["quantiles"], norm["probs"], norm["median"]
    x = np.where(np.isfinite(x), x, med)
    last = len(q) - 1
    cols = np.arange(q.shape[1])[None, :]

    def interp(upper: np.ndarray, forward: bool) -> np.ndarray:
        # ``upper``: index of the first quantile above x (forward) or at/above x (backward); within a run of
        # tied quantiles, forward lands on the run's last probability and backward on its first.
        hi = np.clip(upper, 1, last)
        q_lo, q_hi = q[hi - 1, cols], q[hi, cols]
        gap = q_hi - q_lo
        flat = (x >= q_hi) if forward else (x > q_lo)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(gap > 0, (x - q_lo) / gap, flat.astype(np.float64))
        return p[hi - 1] + np.clip(t, 0.0, 1.0) * (p[hi] - p[hi - 1])

    forward = interp((x[:, None, :] >= q[None, :, :]).sum(axis=1), True)
    backward = interp((x[:, None, :] > q[None, :, :]).sum(axis=1), False)
    return ndtri(np.clip(0.5 * (forward + backward), _P_CLIP, 1 - _P_CLIP))


# -- kernel ridge regression --------------------------------------------------------------------------------
def _sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d2 = np.square(a).sum(1)[:, None] + np.square(b).sum(1)[None, :] - 2 * a @ b.T
    return np.maximum(d2, 0.0)


def fit_krr(z: np.ndarray, y: np.ndarray, alpha: float, gamma: float) -> dict[str, np.ndarray]:
    """Dual coefficients of RBF kernel ridge regression on centred targets."""
    k = np.exp(-gamma * _sq_dist(z, z))
    dual = np.linalg.solve(k + alpha * np.eye(len(z)), y - y.mean())
    return {"support": z, "dual": dual, "bias": np.float64(y.mean()), "gamma": np.float64(gamma)}


def krr_predict(z: np.ndarray, m: dict[str, np.ndarray]) -> np.ndarray:
    return m["bias"] + np.exp(-m["gamma"] * _sq_dist(z, m["support"])) @ m["dual"]


# -- MLP ensemble -------------------------------------------------------------------------------------------
def mlp_predict(z: np.ndarray, w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: np.ndarray) -> np.ndarray:
    """Mean over members of ``gelu(z @ w1[m] + b1[m]) @ w2[m] + b2[m]``; weights stacked on axis 0."""
    from scipy.special import erf

    h = np.einsum("nd,mdh->mnh", z, w1) + b1[:, None, :]
    h = 0.5 * h * (1.0 + erf(h / np.sqrt(2.0)))
    return (np.einsum("mnh,mh->mn", h, w2) + b2[:, None]).mean(axis=0)


def ranking_pairs(content: np.ndarray, kind: np.ndarray, level: np.ndarray) -> np.ndarray:
    """(better, worse) index pairs: within one content and distortion type, every lower level beats every
    higher one; the pristine version (level 0, any type) joins every type's chain."""
    content, kind, level = np.asarray(content), np.asarray(kind), np.asarray(level)
    pairs = []
    for c in np.unique(content):
        in_c = content == c
        pristine = np.flatnonzero(in_c & (level == 0))
        for t in np.unique(kind[in_c & (level > 0)]):
            chain = np.concatenate([pristine, np.flatnonzero(in_c & (kind == t) & (level > 0))])
            lv = level[chain]
            better, worse = np.nonzero(lv[:, None] < lv[None, :])
            pairs.append(np.stack([chain[better], chain[worse]], axis=1))
    return np.concatenate(pairs) if pairs else np.empty((0, 2), dtype=np.int64)


def _train_member(
    z: np.ndarray, y: np.ndarray, z_syn: np.ndarray | None, pairs: np.ndarray | None, s: FitSettings, seed: int
) -> dict[str, np.ndarray]:
    import torch
    from torch import nn

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Dropout(s.input_dropout), nn.Linear(z.shape[1], s.mlp_hidden), nn.GELU(),
                        nn.Dropout(s.hidden_dropout), nn.Linear(s.mlp_hidden, 1)).double()
    if z_syn is not None and pairs is not None and len(pairs) and s.pretrain_steps > 0:
        zs, pr = torch.from_numpy(z_syn), torch.from_numpy(pairs)
        opt = torch.optim.AdamW(net.parameters(), s.mlp_lr, weight_decay=s.mlp_weight_decay)
        for _ in range(s.pretrain_steps):
            pick = pr[torch.randint(len(pr), (s.pretrain_pairs,), generator=gen)]
            out = net(zs).squeeze(1)
            loss = torch.relu(s.pretrain_margin - (out[pick[:, 0]] - out[pick[:, 1]])).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    zt, yt = torch.from_numpy(z), torch.from_numpy(y)
    dy = yt[:, None] - yt[None, :]
    sign, counted = torch.sign(dy), (dy.abs() > 0.1).double()
    opt = torch.optim.AdamW(net.parameters(), s.mlp_lr, weight_decay=s.mlp_weight_decay)
    for _ in range(s.mlp_epochs):
        out = net(zt).squeeze(1)
        diff = out[:, None] - out[None, :]
        loss = ((out - yt) ** 2).mean() + s.rank_weight * (torch.relu(-diff * sign) * counted).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    first, second = net[1], net[4]
    return {"w1": first.weight.detach().numpy().T.copy(), "b1": first.bias.detach().numpy().copy(),
            "w2": second.weight.detach().numpy()[0].copy(), "b2": second.bias.detach().numpy()[0].copy()}


# -- the model ----------------------------------------------------------------------------------------------
def fit(
    x: np.ndarray, mos: np.ndarray, settings: FitSettings = FitSettings(), x_syn: np.ndarray | None = None,
    syn_pairs: np.ndarray | None = None, on_member: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Fit the model on features ``x`` (n, d) and human scores ``mos``; synthetic features and their
    ranking pairs (``ranking_pairs``) pre-train the MLPs. Returns plain arrays (see ``to_state``)."""
    import torch

    s = settings
    x, mos = np.asarray(x, dtype=np.float64), np.asarray(mos, dtype=np.float64)
    if len(x) != len(mos) or len(x) < 4:
        raise ValueError(f"expected matching features and scores for at least 4 images, got {len(x)} and {len(mos)}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same sums in the same order on every run
    blas = _single_threaded_blas()
    try:
        norm = fit_normaliser(x, s.quantiles)
        z = normalise(x, norm)
        mu, sd = float(mos.mean()), float(mos.std()) or 1.0
        y = (mos - mu) / sd
        model: dict[str, np.ndarray] = {f"norm_{k}": v for k, v in norm.items()}
        model.update(mos_mean=np.float64(mu), mos_std=np.float64(sd), krr_weight=np.float64(s.krr_weight))
        if s.krr_weight > 0:
            krr = fit_krr(z, y, s.krr_alpha, s.krr_gamma / z.shape[1])
            model.update({f"krr_{k}": v for k, v in krr.items()})
        if s.krr_weight < 1:
            z_syn = normalise(x_syn, norm) if x_syn is not None and len(x_syn) else None
            members = []
            for m in range(s.mlp_members):
                members.append(_train_member(z, y, z_syn, syn_pairs, s, s.seed * 1000 + m))
                if on_member is not None:
                    on_member(m)
            for k in ("w1", "b1", "w2", "b2"):
                model[f"mlp_{k}"] = np.stack([mb[k] for mb in members])
    finally:
        torch.set_num_threads(threads)
        blas.__exit__(None, None, None)
    return model


def _single_threaded_blas():  # noqa: ANN202 - a context manager
    """numpy's BLAS/LAPACK on one thread while fitting (threadpoolctl, when installed), so the kernel
    solve does not depend on how many cores the machine has."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        from contextlib import nullcontext

        return nullcontext()
    return threadpool_limits(1)


def predict(x: np.ndarray, model: dict[str, np.ndarray]) -> np.ndarray:
    """Scores on the MOS scale, clipped to [0, 100]; NaN where every feature is NaN (image too small)."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    norm = {k.removeprefix("norm_"): v for k, v in model.items() if k.startswith("norm_")}
    z = normalise(x, norm)
    w = float(model["krr_weight"])
    out = np.zeros(len(x))
    if w > 0:
        out += w * krr_predict(z, {k.removeprefix("krr_"): v for k, v in model.items() if k.startswith("krr_")})
    if w < 1:
        out += (1 - w) * mlp_predict(z, model["mlp_w1"], model["mlp_b1"], model["mlp_w2"], model["mlp_b2"])
    scores = np.clip(float(model["mos_mean"]) + float(model["mos_std"]) * out, 0.0, 100.0)
    return np.where(np.isnan(x).all(axis=1), np.nan, scores)


def to_state(model: dict[str, np.ndarray], settings: FitSettings, features_version: int, n_features: int) -> dict:
    """The model as a state dict of tensors (float64), with the settings and versions it was made with."""
    import torch

    state = {k: torch.as_tensor(np.asarray(v, dtype=np.float64)) for k, v in model.items()}
    state["model_version"] = torch.tensor(MODEL_VERSION)
    state["features_version"] = torch.tensor(features_version)
    state["n_features"] = torch.tensor(n_features)
    for k, v in asdict(settings).items():
        state[f"setting_{k}"] = torch.tensor(float(v), dtype=torch.float64)
    return state


def from_state(state: dict) -> dict[str, np.ndarray]:
    return {k: v.double().numpy() for k, v in state.items() if not k.startswith("setting_")}
