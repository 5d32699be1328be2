"""Training maths for ``iqaflow train``: ranking pre-training (RankIQA) and fine-tuning on human scores.

Pure torch + numpy: no tracking, no files. Progress leaves through an ``on_epoch`` callback, which
the Prefect flow points at MLflow.

* Pre-training: crops of pristine images, each distorted by one catalogue type at every level
  (a *group*: pristine + five levels). One shared backbone scores the whole batch and a hinge loss
  asks every less-distorted member of a group to score ``margin`` above every more-distorted one:
  RankIQA's Siamese ranking, in its efficient all-pairs-in-the-batch form. With
  ``classify_weight > 0`` a second head learns the (type, level) class, as DBCNN's synthetic branch.
* Fine-tuning: random native-scale crops of each rated image; the image prediction is the mean of
  its crops, the loss a smooth-L1 regression on standardised MOS plus a pairwise ranking term
  (pairs ordered wrongly by the model pay the MOS gap they got wrong).
Validation uses the scorer's own inference path (grid patches, mean), so val numbers are what
``iqaflow score`` will produce.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

from iqaflow.evaluation.distortions import N_LEVELS, GradedDistortion
from iqaflow.evaluation.metrics import ranking_accuracy
from iqaflow.models.deep.torch_scorer import grid_patches

OnEpoch = Callable[[str, int, dict[str, float]], None]


@dataclass(frozen=True)
class RankSettings:
    crop: int = 64
    epochs: int = 10
    groups_per_epoch: int = 96
    groups_per_batch: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    margin: float = 0.5
    classify_weight: float = 0.0
    val_groups: int = 48
    min_crop_std: float = 0.03  # gray std in [0, 1]: flat crops (sky, walls) show most distortions weakly
    seed: int = 0


@dataclass(frozen=True)
class FinetuneSettings:
    epochs: int = 10
    batch_size: int = 16
    crops_per_image: int = 4
    lr: float = 1e-3
    weight_decay: float = 1e-4
    rank_weight: float = 1.0
    max_patches: int = 64
    seed: int = 0


@dataclass
class Trained:
    state: dict[str, torch.Tensor]
    history: list[dict[str, float]]
    best_epoch: int
    best: dict[str, float]


def random_crop(
    img: np.ndarray, size: int, rng: np.random.Generator, min_std: float = 0.0, tries: int = 8
) -> np.ndarray:
    """A ``size`` square crop (the image itself, padded by reflection, when smaller); prefers textured crops."""
    h, w = img.shape[:2]
    if h < size or w < size:
        img = np.pad(img, ((0, max(0, size - h)), (0, max(0, size - w)), (0, 0)), mode="reflect")
        h, w = img.shape[:2]
    best, best_std = img[:size, :size], -1.0
    for _ in range(tries):
        y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        crop = img[y : y + size, x : x + size]
        std = float(crop.mean(axis=2).std()) / 255.0
        if std >= min_std:
            return np.ascontiguousarray(crop)
        if std > best_std:
            best, best_std = crop, std
    return np.ascontiguousarray(best)


def to_tensor(batch: np.ndarray | Sequence[np.ndarray], device: str) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` -> float ``(N, 3, H, W)`` in [0, 1]."""
    arr = np.stack(batch) if not isinstance(batch, np.ndarray) else batch
    arr = arr if arr.flags.c_contiguous and arr.flags.writeable else np.array(arr, order="C")
    return torch.from_numpy(arr).to(device).permute(0, 3, 1, 2).float().div_(255.0)


@dataclass
class Groups:
    images: np.ndarray  # (G * (N_LEVELS + 1), c, c, 3) uint8
    group: np.ndarray
    level: np.ndarray
    label: np.ndarray  # 0 pristine, else 1 + type * N_LEVELS + level - 1


def make_groups(
    images: Sequence[np.ndarray], distortions: Sequence[GradedDistortion], n: int, s: RankSettings,
    rng: np.random.Generator,
) -> Groups:
    """``n`` groups: a random textured crop of a random image, one random type at every level."""
    out, group, level, label = [], [], [], []
    for g in range(n):
        crop = random_crop(images[int(rng.integers(len(images)))], s.crop, rng, s.min_crop_std)
        t = int(rng.integers(len(distortions)))
        for lv in range(N_LEVELS + 1):
            out.append(distortions[t].at(crop, lv, rng))
            group.append(g)
            level.append(lv)
            label.append(0 if lv == 0 else 1 + t * N_LEVELS + lv - 1)
    return Groups(np.stack(out), np.array(group), np.array(level), np.array(label))


def ranking_loss(scores: torch.Tensor, group: torch.Tensor, level: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean hinge over same-group pairs (i less distorted than j): ``relu(margin - (s_i - s_j))``."""
    pairs = (group[:, None] == group[None, :]) & (level[:, None] < level[None, :])
    diff = scores[:, None] - scores[None, :]
    return F.relu(margin - diff[pairs]).mean()


def _forward_all(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    fwd = getattr(net, "forward_all", None)
    return fwd(x) if fwd is not None else (net(x), None)


@torch.no_grad()
def _score_crops(net: nn.Module, images: np.ndarray, device: str, batch: int = 256) -> np.ndarray:
    net.eval()
    return np.concatenate(
        [net(to_tensor(images[i : i + batch], device)).double().cpu().numpy() for i in range(0, len(images), batch)]
    )


def group_metrics(scores: np.ndarray, g: Groups) -> dict[str, float]:
    """Pairwise ranking accuracy (chance 0.5) and mean per-group SRCC against minus the level."""
    srcc = [
        float(stats.spearmanr(scores[m], -g.level[m]).statistic) if np.ptp(scores[m]) > 0 else 0.0
        for m in (g.group == k for k in np.unique(g.group))
    ]
    return {"pair_acc": ranking_accuracy(scores, g.level, g.group), "srcc": float(np.mean(srcc))}


def pretrain(
    net: nn.Module, train_images: Sequence[np.ndarray], val_images: Sequence[np.ndarray],
    distortions: Sequence[GradedDistortion], s: RankSettings, device: str = "cpu", on_epoch: OnEpoch | None = None,
) -> Trained:
    """Ranking pre-training; keeps the weights of the epoch with the best validation SRCC."""
    if not train_images:
        raise ValueError("pre-training needs at least one training image")
    torch.manual_seed(s.seed)
    rng = np.random.default_rng(s.seed)
    val = make_groups(val_images or train_images, distortions, s.val_groups, s, np.random.default_rng(s.seed + 1))
    net.to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, s.epochs))
    history: list[dict[str, float]] = []
    best: tuple[float, int, dict[str, torch.Tensor], dict[str, float]] | None = None
    for epoch in range(1, s.epochs + 1):
        data = make_groups(train_images, distortions, s.groups_per_epoch, s, rng)
        net.train()
        totals = {"loss": 0.0, "rank_loss": 0.0, "class_loss": 0.0}
        order = rng.permutation(s.groups_per_epoch)
        batches = [order[i : i + s.groups_per_batch] for i in range(0, len(order), s.groups_per_batch)]
        for ids in batches:
            m = np.isin(data.group, ids)
            scores, logits = _forward_all(net, to_tensor(data.images[m], device))
            rank = ranking_loss(scores, torch.from_numpy(data.group[m]).to(device),
                                torch.from_numpy(data.level[m]).to(device), s.margin)
            loss = rank
            if logits is not None and s.classify_weight > 0:
                cls = F.cross_entropy(logits, torch.from_numpy(data.label[m]).to(device))
                loss = rank + s.classify_weight * cls
                totals["class_loss"] += cls.item() / len(batches)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            totals["loss"] += loss.item() / len(batches)
            totals["rank_loss"] += rank.item() / len(batches)
        sched.step()
        val_metrics = group_metrics(_score_crops(net, val.images, device), val)
        metrics = {**totals, **{f"val_{k}": v for k, v in val_metrics.items()}}
        if s.classify_weight <= 0:
            metrics.pop("class_loss")
        history.append(metrics)
        if on_epoch is not None:
            on_epoch("pretrain", epoch, metrics)
        if best is None or metrics["val_srcc"] > best[0]:
            best = (metrics["val_srcc"], epoch, copy.deepcopy(net.state_dict()), metrics)
    assert best is not None  # epochs >= 1 is validated by the config
    return Trained(best[2], history, best[1], best[3])


@torch.no_grad()
def predict_images(
    net: nn.Module, images: Sequence[np.ndarray], patch: int, max_patches: int, device: str
) -> np.ndarray:
    """Image scores as ``iqaflow score`` computes them: mean over grid patches at native size."""
    net.eval()
    out = np.empty(len(images), dtype=np.float64)
    for i, img in enumerate(images):
        x = to_tensor(img[None], device)
        out[i] = float(net(grid_patches(x, patch, None, max_patches)).double().mean())
    return out


def _monotonic_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pairs the model orders against the targets pay the target gap: ``relu((t_i - t_j) - (p_i - p_j))``."""
    dt = target[:, None] - target[None, :]
    dp = pred[:, None] - pred[None, :]
    pairs = dt > 0
    return F.relu(dt[pairs] - dp[pairs]).mean() if pairs.any() else pred.sum() * 0.0


def finetune(
    net: nn.Module, train: Sequence[tuple[np.ndarray, float]], val: Sequence[tuple[np.ndarray, float]], patch: int,
    s: FinetuneSettings, device: str = "cpu", on_epoch: OnEpoch | None = None, stage: str = "finetune",
) -> Trained:
    """Regression on z-scored targets (the caller standardises them) with a ranking term."""
    if len(train) < 2:
        raise ValueError(f"fine-tuning needs at least 2 training images, got {len(train)}")
    torch.manual_seed(s.seed)
    rng = np.random.default_rng(s.seed)
    net.to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, s.epochs))
    history: list[dict[str, float]] = []
    best: tuple[float, int, dict[str, torch.Tensor], dict[str, float]] | None = None
    for epoch in range(1, s.epochs + 1):
        net.train()
        order = rng.permutation(len(train))
        batches = [order[i : i + s.batch_size] for i in range(0, len(order), s.batch_size)]
        totals = {"loss": 0.0, "reg_loss": 0.0, "rank_loss": 0.0}
        for ids in batches:
            crops = [random_crop(train[i][0], patch, rng) for i in ids for _ in range(s.crops_per_image)]
            pred = net(to_tensor(crops, device)).view(len(ids), s.crops_per_image).mean(dim=1)
            target = torch.tensor([train[i][1] for i in ids], dtype=torch.float32, device=device)
            reg = F.smooth_l1_loss(pred, target)
            rank = _monotonic_loss(pred, target)
            loss = reg + s.rank_weight * rank
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for k, v in (("loss", loss), ("reg_loss", reg), ("rank_loss", rank)):
                totals[k] += v.item() / len(batches)
        sched.step()
        metrics = dict(totals)
        if val:
            pred = predict_images(net, [v[0] for v in val], patch, s.max_patches, device)
            target = np.array([v[1] for v in val])
            metrics["val_srcc"] = float(stats.spearmanr(pred, target).statistic) if np.ptp(pred) > 0 else 0.0
            metrics["val_plcc"] = float(stats.pearsonr(pred, target).statistic) if np.ptp(pred) > 0 else 0.0
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(stage, epoch, metrics)
        key = metrics.get("val_srcc", -metrics["loss"])
        if best is None or key > best[0] or not val:
            best = (key, epoch, copy.deepcopy(net.state_dict()), metrics)
    assert best is not None
    return Trained(best[2], history, best[1], best[3])


def content_splits(
    contents: Sequence[str], mode: str, folds: int, val_fraction: float, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, val) index arrays that never put one content in both: one held-out split or ``folds`` folds."""
    keys = sorted(set(contents))
    rng = np.random.default_rng(seed)
    rng.shuffle(keys)
    idx = np.arange(len(contents))
    where = {k: i for i, k in enumerate(keys)}
    pos = np.array([where[c] for c in contents])
    if mode == "kfold":
        if folds < 2 or folds > len(keys):
            raise ValueError(f"k-fold needs 2 <= folds <= {len(keys)} contents, got {folds}")
        fold_of = np.arange(len(keys)) % folds
        return [(idx[fold_of[pos] != f], idx[fold_of[pos] == f]) for f in range(folds)]
    n_val = int(round(len(keys) * val_fraction))
    if val_fraction > 0:
        n_val = min(max(1, n_val), len(keys) - 1)
    val_keys = pos < n_val
    return [(idx[~val_keys], idx[val_keys])]
