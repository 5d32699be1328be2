"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric").

Version 0.1 of the reference code (richzhang/PerceptualSimilarity, the ``lpips`` package, BSD):
inputs in [0, 1] go to [-1, 1] and through the scaling layer, features are tapped after each
ReLU block, unit-normalised along channels, squared differences are weighted per channel by the
learned non-negative 1x1 heads, averaged over space and summed over layers.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from iqaflow.models.deep.nets.trunks import Normalise, alexnet_features, fp32, taps, vgg16_features

Backbone = Literal["alex", "vgg"]

# The reference code's ScalingLayer acts on x in [-1, 1]: (x - shift) / scale. For x01 in [0, 1]
# that is (x01 - (1 + shift) / 2) / (scale / 2), which is what Normalise applies.
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
# Indices of the tapped ReLU outputs in the torchvision ``features`` Sequential, and their widths.
TAPS: dict[str, tuple[int, ...]] = {"alex": (1, 4, 7, 9, 11), "vgg": (3, 8, 15, 22, 29)}
CHANNELS: dict[str, tuple[int, ...]] = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}
EPS = 1e-10


def unit_normalise(x: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Divide every feature vector (over channels) by its L2 norm, as ``lpips.normalize_tensor``."""
    return x / (torch.sqrt(torch.sum(x * x, dim=1, keepdim=True)) + eps)


def lpips_distance(feats_x: list[torch.Tensor], feats_y: list[torch.Tensor], heads: list[torch.Tensor]) -> torch.Tensor:
    """Sum over layers of the spatial mean of the head-weighted squared difference of unit features.

    ``heads[k]`` has shape ``(1, C_k, 1, 1)`` (the 1x1 conv weight); returns ``(N,)``.
    """
    total = torch.zeros(feats_x[0].shape[0], device=feats_x[0].device)
    for fx, fy, w in zip(feats_x, feats_y, heads, strict=True):
        diff = (unit_normalise(fx.float()) - unit_normalise(fy.float())) ** 2
        total = total + (diff * w.float()).sum(dim=1).mean(dim=(1, 2))
    return total


class LPIPS(nn.Module):
    """State dict: ``features.N.{weight,bias}`` (torchvision trunk) and ``lins.K.weight`` (heads)."""

    def __init__(self, backbone: Backbone = "alex") -> None:
        super().__init__()
        if backbone not in TAPS:
            raise ValueError(f"LPIPS backbone must be one of {sorted(TAPS)}, got {backbone!r}")
        self.backbone = backbone
        self.taps = TAPS[backbone]
        trunk = alexnet_features() if backbone == "alex" else vgg16_features()
        self.features = trunk[: self.taps[-1] + 1]
        self.scaling = Normalise(tuple((1 + s) / 2 for s in SHIFT), tuple(s / 2 for s in SCALE))
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in CHANNELS[backbone])
        for lin in self.lins:  # trained heads are clamped non-negative; a fresh init should be too
            nn.init.uniform_(lin.weight, 0.0, 2.0 / lin.in_channels)

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        return taps(self.features, self.scaling(x), self.taps)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Distance between images ``x`` and ``y`` ``(N, 3, H, W)`` in [0, 1]; ``(N,)``, 0 = identical."""
        feats = self.feature_maps(torch.cat([x, y]))
        n = x.shape[0]
        with fp32(x):
            return lpips_distance([f[:n] for f in feats], [f[n:] for f in feats], [lin.weight for lin in self.lins])
