"""Kang et al. 2014, "Convolutional Neural Networks for No-Reference Image Quality Assessment".

One 7x7 convolution with 50 filters over a 32x32 locally contrast-normalised gray patch, global
max *and* min pooling of every feature map (100 values), two fully connected layers of 800 ReLUs
and a linear output. The image score is the mean over its patches (done by the scorer).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PATCH = 32
# C in (I - mu) / (sigma + C): 1 in 8-bit units, the paper's scale, for inputs in [0, 1].
LCN_C = 1.0 / 255.0


def local_contrast_normalise(x: torch.Tensor, window: int = 3, c: float = LCN_C) -> torch.Tensor:
    """(I - local mean) / (local std + c) over a ``window`` x ``window`` box, reflected borders; ``(N, 1, H, W)``."""
    pad = window // 2
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    mu = F.avg_pool2d(xp, window, stride=1)
    var = (F.avg_pool2d(xp * xp, window, stride=1) - mu * mu).clamp_min(0.0)
    return (x - mu) / (var.sqrt() + c)


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
