"""DISTS (Ding et al. 2020, "Image Quality Assessment: Unifying Structure and Texture Similarity").

As the reference code (dingkeyan93/DISTS, ``DISTS_pytorch``): VGG16 with every max-pool replaced
by L2 pooling (3x3 Hann window, stride 2), six stages (the ImageNet-normalised input's raw image
and relu1_2 ... relu5_3); per channel a structure term on global means and a texture term on
global (co)variances, weighted by learned alpha/beta that are renormalised to sum to one.
The score is a distance: 0 for identical images.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from iqaflow.models.deep.nets.trunks import Normalise, fp32, taps, vgg16_features

TAPS = (3, 8, 15, 22, 29)
POOLS = (4, 9, 16, 23)
CHANNELS = (3, 64, 128, 256, 512, 512)
C1 = C2 = 1e-6


class L2Pool2d(nn.Module):
    """sqrt(Hann-weighted local mean of x^2), depthwise, stride 2: an alias-free replacement of max-pooling."""

    def __init__(self) -> None:
        super().__init__()
        a = np.hanning(5)[1:-1]
        g = torch.tensor(a[:, None] * a[None, :], dtype=torch.float32)
        self.register_buffer("kernel", (g / g.sum())[None, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with fp32(x):  # x * x overflows fp16 for activations above 256
            x = x.float()
            k = self.kernel.expand(x.shape[1], 1, 3, 3)
            return (F.conv2d(x * x, k, stride=2, padding=1, groups=x.shape[1]) + 1e-12).sqrt()


def dists_distance(
    feats_x: list[torch.Tensor], feats_y: list[torch.Tensor], alpha: torch.Tensor, beta: torch.Tensor
) -> torch.Tensor:
    """``1 - sum_k sum_c (alpha S1 + beta S2)`` with alpha, beta ``(1, sum C_k, 1, 1)``; returns ``(N,)``."""
    w_sum = alpha.sum() + beta.sum()
    chans = [f.shape[1] for f in feats_x]
    alphas = torch.split(alpha / w_sum, chans, dim=1)
    betas = torch.split(beta / w_sum, chans, dim=1)
    sim = torch.zeros(feats_x[0].shape[0], device=feats_x[0].device)
    for fx, fy, a, b in zip(feats_x, feats_y, alphas, betas, strict=True):
        fx, fy = fx.float(), fy.float()
        mx, my = fx.mean((2, 3), keepdim=True), fy.mean((2, 3), keepdim=True)
        s1 = (2 * mx * my + C1) / (mx**2 + my**2 + C1)
        vx = ((fx - mx) ** 2).mean((2, 3), keepdim=True)
        vy = ((fy - my) ** 2).mean((2, 3), keepdim=True)
        cov = (fx * fy).mean((2, 3), keepdim=True) - mx * my
        s2 = (2 * cov + C2) / (vx + vy + C2)
        sim = sim + (a.float() * s1 + b.float() * s2).sum(dim=(1, 2, 3))
    return 1 - sim


class DISTS(nn.Module):
    """State dict: ``features.N.{weight,bias}`` (torchvision VGG16 indices) and ``alpha``, ``beta``."""

    def __init__(self) -> None:
        super().__init__()
        features = vgg16_features()[: TAPS[-1] + 1]
        for i in POOLS:
            features[i] = L2Pool2d()
        self.features = features
        self.normalise = Normalise()
        self.alpha = nn.Parameter(torch.empty(1, sum(CHANNELS), 1, 1).normal_(0.1, 0.01))
        self.beta = nn.Parameter(torch.empty(1, sum(CHANNELS), 1, 1).normal_(0.1, 0.01))

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The raw input (as the reference code: not normalised) then the five ReLU taps."""
        return [x, *taps(self.features, self.normalise(x), TAPS)]

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Distance between ``x`` and ``y`` ``(N, 3, H, W)`` in [0, 1]; ``(N,)``."""
        n = x.shape[0]
        feats = self.feature_maps(torch.cat([x, y]))
        with fp32(x):
            return dists_distance([f[:n] for f in feats], [f[n:] for f in feats], self.alpha, self.beta)
