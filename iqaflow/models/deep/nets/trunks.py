"""Shared pieces: ImageNet input normalisation, the AlexNet and VGG16 feature trunks, fp32 islands.

The trunks are built here rather than through ``torchvision.models.alexnet()/vgg16()`` so that
no 100M-parameter classifier is allocated and initialised just to be thrown away; their module
indices, and so their state-dict keys (``features.N.weight``), are torchvision's, which lets a
torchvision ImageNet checkpoint load unchanged (a test checks the keys and shapes).
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalise(nn.Module):
    """``(x - mean) / std`` per channel; constants are code, not weights (non-persistent buffers)."""

    def __init__(self, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def alexnet_features() -> nn.Sequential:
    """``torchvision.models.alexnet().features``: 5 convs (indices 0, 3, 6, 8, 10), ReLUs, 3 max-pools."""
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )


def vgg16_features() -> nn.Sequential:
    """``torchvision.models.vgg16().features`` (31 modules), with torchvision's VGG initialisation."""
    features = make_layers(cfgs["D"], batch_norm=False)
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return features


def taps(features: nn.Sequential, x: torch.Tensor, at: tuple[int, ...]) -> list[torch.Tensor]:
    """Outputs of ``features`` after the modules with indices ``at`` (ascending); stops at the last."""
    out: list[torch.Tensor] = []
    for i, module in enumerate(features):
        x = module(x)
        if i in at:
            out.append(x)
            if len(out) == len(at):
                break
    return out


def fp32(x: torch.Tensor) -> AbstractContextManager[None]:
    """Disable autocast for statistics that overflow or lose precision in fp16 (norms, covariances, pools)."""
    return torch.autocast(device_type=x.device.type, enabled=False)
