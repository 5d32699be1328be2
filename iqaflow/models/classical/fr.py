"""Classical full-reference (FR) measures: pure batched functions, thin scorers.

Every function takes float tensors ``(N, C, H, W)`` in [0, 1] (distorted image first, reference
second: VIF is not symmetric) and returns one value per image. The scorers stack images of the
same size into such tensors; images of different sizes go in separate batches. An image and its
reference must have the same size: registration of scans to masters is a separate step.

``ssim``, ``ms_ssim``, ``gmsd`` and ``vif`` give the values of their authors' MATLAB code on
``rgb2gray`` luminance (``official_fr``, ``vif_wavelet``; parity tests against the published
TID2013 values), so thresholds and papers' numbers mean the same here. Variants under their own names:
``ssim_rgb`` and ``ms_ssim_rgb`` are piq's (mean over the RGB channels, as skimage's ``channel_axis``,
so chroma-only damage counts; ``ssim_rgb`` pools by round(short side / 256) first, MS-SSIM's 5 scales
are multiplied), ``vifp`` is piq's pixel-domain VIF (Gaussian windows on BT.601 luminance, ~2x
cheaper than the wavelet VIF). PSNR averages over RGB; HaarPSI converts to YIQ inside piq; FSIM
(FSIMc) and VSI use luminance and chroma. ``ssim_worst`` works on gray (BT.601 luminance), since
one map must point at one place.

On a CPU device the scorers run their ``cpu_metric``, one pair at a time with OpenCV (``fast_fr`` for
piq's maths, ``official_fr`` / ``vif_wavelet`` for the authors'); CUDA runs the batched torch
functions. Both give the same numbers (within float32 rounding for piq's maths, ~1e-6 for the rest; tests).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import TYPE_CHECKING, ClassVar

import cv2
import numpy as np

from iqaflow.models.base import Scorer, ScorerInfo
from iqaflow.models.classical import fast_fr, official_fr, vif_wavelet
from iqaflow.models.classical.fast_fr import SSIM_K1, SSIM_K2, SSIM_SIGMA, SSIM_WINDOW
from iqaflow.models.classical.vsi import vsi as vsi_m
from iqaflow.models.registry import register

if TYPE_CHECKING:
    import torch

    Metric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# One (distorted, reference) pair of HWC / HW arrays -> one value: the CPU paths.
PairMetric = Callable[[np.ndarray, np.ndarray], float]

# Cap on the elements of one stacked tensor (64 MiB of float32): piq keeps several maps of this size.
MAX_BATCH_ELEMENTS = 1 << 24
# piq adds this to the MSE, so identical images give 80 dB rather than inf (a number a gate can compare).
PSNR_MAX_DB = 80.0


def _piq() -> ModuleType:
    """piq, imported at first use: it imports torchvision and with it torch._dynamo, ~1.2 s of CPU at
    every worker's start that a run without these FR scorers would pay for nothing."""
    import piq

    return piq


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """PSNR in dB over all channels; at most 80 dB (identical images)."""
    return _piq().psnr(x, y, data_range=1.0, reduction="none")


def ssim_rgb(x: torch.Tensor, y: torch.Tensor, downsample: bool = True) -> torch.Tensor:
    """piq's mean SSIM (Wang et al. 2004), averaged over channels, over the valid (unpadded) window positions.

    ``downsample`` average-pools by ``f = round(min(H, W) / 256)`` first, as Wang's reference
    ``ssim.m`` does to model viewing distance; without it the result equals skimage's
    ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``.
    """
    return _piq().ssim(
        x, y, kernel_size=SSIM_WINDOW, kernel_sigma=SSIM_SIGMA, data_range=1.0, reduction="none",
        downsample=downsample, k1=SSIM_K1, k2=SSIM_K2,
    )


def ms_ssim_rgb(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """piq's MS-SSIM (Wang, Simoncelli & Bovik 2003): product of the 5 scales with the published weights,
    averaged over channels.

    Images smaller than 161 px on the short side are an error, not a silently different
    measure with fewer scales: scores from different scale counts are not comparable.
    """
    fast_fr.check_ms_ssim_size(*x.shape[-2:])
    return _piq().multi_scale_ssim(
        x, y, kernel_size=SSIM_WINDOW, kernel_sigma=SSIM_SIGMA, data_range=1.0, reduction="none",
        k1=SSIM_K1, k2=SSIM_K2,
    )


def vifp(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """piq's pixel-domain VIF (Sheikh & Bovik 2006) on BT.601 luminance; ``x`` distorted, ``y`` reference."""
    return _piq().vif_p(x, y, data_range=1.0, reduction="none")


def fsim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """FSIMc (Zhang et al. 2011): phase congruency and gradient similarity, plus chroma."""
    return _piq().fsim(x, y, data_range=1.0, reduction="none", chromatic=True)


def haarpsi(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """HaarPSI (Reisenhofer et al. 2018) on YIQ with piq's default 3 scales and subsampling."""
    return _piq().haarpsi(x, y, data_range=1.0, reduction="none")


def to_tensor(images: Sequence[np.ndarray], device: str = "cpu") -> torch.Tensor:
    """Same-size float images ``(H, W)`` or ``(H, W, C)`` -> ``(N, C, H, W)`` float32 clamped to [0, 1]."""
    import torch
    first = images[0]
    c = first.shape[2] if first.ndim == 3 else 1
    arr = np.empty((len(images), c, *first.shape[:2]), dtype=np.float32)
    for i, img in enumerate(images):  # one copy: HWC -> CHW straight into the stacked array
        arr[i] = img.transpose(2, 0, 1) if img.ndim == 3 else img[None]
    return torch.from_numpy(arr).to(device).clamp_(0.0, 1.0)


def _check_pairs(images: Sequence[np.ndarray], references: Sequence[np.ndarray]) -> None:
    if len(images) != len(references):
        raise ValueError(f"expected as many references as images, got {len(references)} for {len(images)}")
    for img, ref in zip(images, references, strict=True):
        if img.shape != ref.shape:
            raise ValueError(
                f"image is {img.shape[1]}x{img.shape[0]} but its reference is {ref.shape[1]}x{ref.shape[0]}; "
                "FR measures need the same size. Fix: supply references at the images' size"
            )


def size_groups(shapes: Sequence[tuple[int, ...]], max_elements: int = MAX_BATCH_ELEMENTS) -> list[list[int]]:
    """Indices grouped by equal shape, each group cut so a stacked tensor has at most ``max_elements``."""
    by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, shape in enumerate(shapes):
        by_shape[shape].append(i)
    groups = []
    for shape, idx in by_shape.items():
        per = max(1, max_elements // max(1, int(np.prod(shape))))
        groups.extend(idx[k : k + per] for k in range(0, len(idx), per))
    return groups


@contextmanager
def exact_float32(device: str) -> Iterator[None]:
    """No TF32 in cuDNN convolutions: VIFp's 17x17 variances on 0-255 values drift ~1e-3 with it, and a
    shard's scores must not depend on whether a GPU or a CPU worker computed them."""
    import torch
    if not device.startswith("cuda"):
        yield
        return
    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = previous


def score_pairs_batched(
    metric: Metric, images: Sequence[np.ndarray], references: Sequence[np.ndarray], device: str = "cpu",
    max_elements: int = MAX_BATCH_ELEMENTS,
) -> np.ndarray:
    """Apply ``metric`` to same-size stacks of pairs; returns float64 ``(N,)`` in input order."""
    import torch
    _check_pairs(images, references)
    out = np.empty(len(images), dtype=np.float64)
    with torch.inference_mode(), exact_float32(device):
        for idx in size_groups([img.shape for img in images], max_elements):
            x = to_tensor([images[i] for i in idx], device)
            y = to_tensor([references[i] for i in idx], device)
            out[idx] = metric(x, y).reshape(-1).double().cpu().numpy()
    return out


# ---- local SSIM map: where is the worst damage? ----


def ssim_map(img: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Local SSIM, ``(H, W)`` float64, for gray images in [0, 1] (colour is converted to BT.601 luminance).

    Same window, constants and symmetric border as skimage's ``structural_similarity(
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1, full=True)``;
    its mean over the map without a 5-px border is that function's SSIM.
    """
    if img.shape != ref.shape:
        raise ValueError(f"expected image and reference of the same shape, got {img.shape} and {ref.shape}")
    x, y = (_gray64(a) for a in (img, ref))

    def blur(a: np.ndarray) -> np.ndarray:
        # 11 taps = skimage's truncate=3.5 at sigma 1.5; BORDER_REFLECT is scipy's mode="reflect".
        return cv2.GaussianBlur(a, (SSIM_WINDOW, SSIM_WINDOW), SSIM_SIGMA, borderType=cv2.BORDER_REFLECT)

    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cxy = blur(x * y) - mx * my
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))


def _gray64(a: np.ndarray) -> np.ndarray:
    if a.ndim == 3:
        a = a[:, :, :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float64)
    return np.ascontiguousarray(a, dtype=np.float64)


def region_size(height: int, width: int) -> int:
    """Side of the square region searched for the worst SSIM: 1/8 of the short side, 16 px at least."""
    short = min(height, width)
    return min(short, max(16, round(short / 8)))


def worst_region(smap: np.ndarray, size: int) -> tuple[float, float, float, float, float]:
    """(mean, x0, y0, x1, y1) of the ``size`` x ``size`` square with the lowest mean of ``smap``.

    Every integer position is tried (summed-area table); x1/y1 are exclusive pixel coordinates.
    Ties go to the first position in row-major order.
    """
    h, w = smap.shape
    size = max(1, min(size, h, w))
    sat = cv2.integral(smap.astype(np.float64, copy=False))
    sums = sat[size:, size:] - sat[:-size, size:] - sat[size:, :-size] + sat[:-size, :-size]
    y0, x0 = np.unravel_index(int(np.argmin(sums)), sums.shape)
    return float(sums[y0, x0]) / (size * size), float(x0), float(y0), float(x0 + size), float(y0 + size)


# ---- scorers ----


class PiqPairScorer(Scorer):
    """An FR scorer whose maths is one batched function of (images, references) tensors.

    ``cpu_metric``, where set, replaces it on a CPU device: the same values one pair at a time with
    OpenCV filters, 10-100x faster there than 2D convolutions in torch. CUDA runs ``metric`` in batches.
    """

    metric: ClassVar[Metric]
    cpu_metric: ClassVar[PairMetric | None] = None

    def score_pairs(self, images: Sequence[np.ndarray], references: Sequence[np.ndarray]) -> np.ndarray:
        fast = type(self).cpu_metric
        # Device type from the string ("cpu", "cpu:0", "cuda:1"): the OpenCV path never imports torch.
        if fast is not None and str(self.device).split(":")[0] == "cpu":
            _check_pairs(images, references)
            values = [fast(img, ref) for img, ref in zip(images, references, strict=True)]
            return np.asarray(values, dtype=np.float64).reshape(-1, 1)
        return score_pairs_batched(type(self).metric, images, references, self.device)[:, None]


def _info(name: str, higher: bool, rng: tuple[float | None, float | None], description: str) -> ScorerInfo:
    return ScorerInfo(
        name=name, kind="fr", higher_is_better=higher, score_range=rng, description=description,
        colour="rgb", batchable=True,
    )


@register
class PSNR(PiqPairScorer):
    info = _info("psnr", True, (0.0, PSNR_MAX_DB), "Peak signal-to-noise ratio in dB over RGB; 80 = identical.")
    metric = staticmethod(psnr)
    cpu_metric = staticmethod(fast_fr.psnr)


@register
class SSIM(PiqPairScorer):
    info = _info(
        "ssim", True, (-1.0, 1.0),
        "Structural similarity (Wang 2004) as ssim.m on rgb2gray luminance, full resolution.",
    )
    metric = staticmethod(official_fr.ssim_torch)
    cpu_metric = staticmethod(official_fr.ssim)


@register
class SSIMRGB(PiqPairScorer):
    info = _info(
        "ssim_rgb", True, (-1.0, 1.0),
        "piq's SSIM: mean over RGB channels (sees chroma damage), downsampled by round(short side/256) first.",
    )
    metric = staticmethod(ssim_rgb)
    cpu_metric = staticmethod(fast_fr.ssim_rgb)


@register
class MSSSIM(PiqPairScorer):
    info = _info(
        "ms_ssim", True, (0.0, 1.0),
        "Multi-scale SSIM as msssim.m ('wtd_sum') on rgb2gray luminance; images need >= 176 px a side.",
    )
    metric = staticmethod(official_fr.ms_ssim_torch)
    cpu_metric = staticmethod(official_fr.ms_ssim)


@register
class MSSSIMRGB(PiqPairScorer):
    info = _info(
        "ms_ssim_rgb", True, (0.0, 1.0),
        "piq's multi-scale SSIM: product of 5 scales, mean over RGB channels; images need >= 161 px a side.",
    )
    metric = staticmethod(ms_ssim_rgb)
    cpu_metric = staticmethod(fast_fr.ms_ssim_rgb)


@register
class GMSD(PiqPairScorer):
    info = _info(
        "gmsd", False, (0.0, 1.0), "Gradient magnitude similarity deviation as GMSD.m on rgb2gray; 0 = identical.",
    )
    metric = staticmethod(official_fr.gmsd_torch)
    cpu_metric = staticmethod(official_fr.gmsd)


@register
class VIF(PiqPairScorer):
    info = _info(
        "vif", True, (0.0, None),
        "Visual information fidelity as vifvec.m (steerable-pyramid GSM); 1 = identical, >1 = enhanced.",
    )
    metric = staticmethod(vif_wavelet.vif_torch)
    cpu_metric = staticmethod(vif_wavelet.vif)


@register
class VIFP(PiqPairScorer):
    info = _info(
        "vifp", True, (0.0, None),
        "piq's pixel-domain VIF (Gaussian windows, 4 scales), ~2x cheaper than vif; 1 = identical, >1 = enhanced.",
    )
    metric = staticmethod(vifp)
    cpu_metric = staticmethod(fast_fr.vifp)


@register
class FSIM(PiqPairScorer):
    info = _info("fsim", True, (0.0, 1.0), "Feature similarity with chroma (FSIMc).")
    metric = staticmethod(fsim)


@register
class VSI(Scorer):
    """The authors' VSI.m (``iqaflow.models.classical.vsi``). It runs in float64 numpy on every device: there is no
    batched torch version, and piq's differs from VSI.m by up to 0.01 (its average pooling is shifted)."""

    info = _info(
        "vsi", True, (0.0, 1.0),
        "Visual-saliency-induced similarity index (Zhang, Shen & Li 2014) as the authors' VSI.m computes "
        "it (SDSP saliency, LMN gradients and chroma); on the CPU on every device.",
    )

    def score_pairs(self, images: Sequence[np.ndarray], references: Sequence[np.ndarray]) -> np.ndarray:
        _check_pairs(images, references)
        values = [vsi_m(img, ref) for img, ref in zip(images, references, strict=True)]
        return np.asarray(values, dtype=np.float64).reshape(-1, 1)


@register
class HaarPSI(PiqPairScorer):
    info = _info("haarpsi", True, (0.0, 1.0), "Haar wavelet-based perceptual similarity.")
    metric = staticmethod(haarpsi)


@register
class SSIMWorst(Scorer):
    info = ScorerInfo(
        name="ssim_worst",
        kind="fr",
        higher_is_better=True,
        score_range=(-1.0, 1.0),
        description="Mean local SSIM (luminance, full resolution) of the worst square region; locates defects.",
        colour="gray",
        extra_outputs=("ssim_worst_x0", "ssim_worst_y0", "ssim_worst_x1", "ssim_worst_y1"),
        extra_descriptions={
            "ssim_worst_x0": "left edge of the worst region, pixels",
            "ssim_worst_y0": "top edge of the worst region, pixels",
            "ssim_worst_x1": "right edge (exclusive) of the worst region, pixels",
            "ssim_worst_y1": "bottom edge (exclusive) of the worst region, pixels",
        },
    )

    def score_pairs(self, images: Sequence[np.ndarray], references: Sequence[np.ndarray]) -> np.ndarray:
        _check_pairs(images, references)
        out = np.empty((len(images), len(self.info.outputs)), dtype=np.float64)
        for i, (img, ref) in enumerate(zip(images, references, strict=True)):
            out[i] = worst_region(ssim_map(img, ref), region_size(*img.shape[:2]))
        return out
