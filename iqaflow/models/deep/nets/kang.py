"""Kang et al. 2014, "Convolutional Neural Networks for No-Reference Image Quality Assessment".

One 7x7 convolution with 50 filters over a 32x32 locally contrast-normalised gray patch, global
max *and* min pooling of every feature map (100 values), two fully connected layers of 800 ReLUs
and a linear output. The image score is the mean over its patches (done by the scorer).

The preprocessing is the published model's (lidq92/CNNIQA, whose ``CNNIQA-LIVE`` weights these
are), because its weights only give the published scores on exactly those inputs: PIL's integer
``convert("L")`` of the 8-bit image, non-overlapping tiles from the top-left corner, and per-patch
normalisation with C = 1 on [0, 1] values and symmetric borders.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PATCH = 32
# C in (I - mu) / (sigma + C) on inputs in [0, 1]: 1, as the published CNNIQA-LIVE weights were
# trained with (lidq92/CNNIQA); the paper's "C = 1" in 8-bit units would be 1/255 here.
LCN_C = 1.0


def local_contrast_normalise(x: torch.Tensor, window: int = 3, c: float = LCN_C) -> torch.Tensor:
    """(I - local mean) / (local std + c) over a ``window`` x ``window`` box; ``(N, 1, H, W)``.

    Borders are symmetric (mirrored with the edge pixel repeated, scipy's "reflect"), as the
    reference code's filter; for a 3x3 window that is edge replication.
    """
    # Centring first keeps E[x^2] - mean^2 from cancelling in float32: the reference computes in
    # float64, and without it its scores were 8e-5 away instead of 1e-5. The result is shift-invariant.
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    pad = window // 2
    xp = _symmetric_pad(x, pad)
    mu = F.avg_pool2d(xp, window, stride=1)
    var = (F.avg_pool2d(xp * xp, window, stride=1) - mu * mu).clamp_min(0.0)
    return (x - mu) / (var.sqrt() + c)


def pil_luma(rgb: torch.Tensor) -> torch.Tensor:
    """RGB ``(N, 3, H, W)`` in [0, 1] -> gray ``(N, 1, H, W)`` in [0, 1], equal to PIL's ``convert("L")``
    of the 8-bit image: ``(19595 R + 38470 G + 7471 B + 2^15) >> 16`` in integers.

    A float luma rounded afterwards differs by one grey level on some pixels, which moves the
    official score by up to 0.1 DMOS.
    """
    v = torch.round(rgb.float() * 255).clamp_(0, 255).to(torch.int32)
    luma = (v[:, 0:1] * 19595 + v[:, 1:2] * 38470 + v[:, 2:3] * 7471 + 32768) >> 16
    return luma.float() * (1 / 255)


def tile_starts(length: int, patch: int = PATCH) -> list[int]:
    """The reference code's tile offsets, ``range(0, length - patch, patch)``: it leaves out the
    last tile when ``length`` is an exact multiple of ``patch``. At least one tile (the first)."""
    return list(range(0, length - patch, patch)) or [0]


def _symmetric_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Pad the last two axes by ``pad`` with symmetric borders (torch's "reflect" omits the edge pixel)."""
    if pad == 1:
        return F.pad(x, (1, 1, 1, 1), mode="replicate")
    h, w = x.shape[-2:]
    rows = torch.cat([torch.arange(pad - 1, -1, -1), torch.arange(h), torch.arange(h - 1, h - 1 - pad, -1)])
    cols = torch.cat([torch.arange(pad - 1, -1, -1), torch.arange(w), torch.arange(w - 1, w - 1 - pad, -1)])
    return x[..., rows.to(x.device)[:, None], cols.to(x.device)[None, :]]


class KangCNN(nn.Module):
    """State dict: ``conv1``, ``fc1``, ``fc2``, ``fc3`` weights and biases."""

    def __init__(self, filters: int = 50, hidden: int = 800) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, filters, kernel_size=7)
        self.fc1 = nn.Linear(2 * filters, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Gray patches ``(N, 1, 32, 32)`` in [0, 1] -> patch scores ``(N,)``."""
        h = self.conv1(local_contrast_normalise(x.float()))
        h = torch.cat([h.amax(dim=(2, 3)), h.amin(dim=(2, 3))], dim=1)
        h = F.relu(self.fc1(h))
        h = F.relu(self.fc2(h))
        return self.fc3(h).squeeze(1)
