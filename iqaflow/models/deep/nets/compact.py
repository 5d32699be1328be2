"""A compact quality CNN for ranking pre-training and fine-tuning on CPU in minutes ("rankiqa_small").

Five 3x3 convolutions with group norm (the first at full resolution, so blur and noise stay
visible), then mean and standard-deviation pooling of the last feature maps (the std pool carries
how unevenly a distortion hits the image), plus the input's per-channel mean and std. A two-layer
head gives the quality score; an optional second head classifies the distortion type and level as
DBCNN's synthetic branch does. Trained models name
their architecture by a key of ``ARCHITECTURES`` and its keyword arguments, never an import path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

# Inputs in [0, 1] are centred on a typical photo's statistics (constants are code, not weights).
_MEAN, _STD = 0.45, 0.25
_GLOBAL = 6  # per-channel mean and std of the input


class CompactIQA(nn.Module):
    """``forward`` returns quality ``(N,)``; ``forward_all`` also the class logits (or None)."""

    def __init__(self, width: int = 24, n_classes: int = 0) -> None:
        super().__init__()
        w = int(width)

        def conv(cin: int, cout: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.GroupNorm(4, cout), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *conv(3, w, 1), *conv(w, w, 2), *conv(w, 2 * w, 2), *conv(2 * w, 2 * w, 2), *conv(2 * w, 4 * w, 1)
        )
        dim = 8 * w + _GLOBAL
        self.quality = nn.Sequential(nn.Linear(dim, 4 * w), nn.ReLU(inplace=True), nn.Linear(4 * w, 1))
        self.classifier = nn.Linear(dim, n_classes) if n_classes > 0 else None

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.float() - _MEAN) / _STD
        h = self.features(x).float()  # pooled statistics in fp32 even under CUDA autocast
        # Group norm makes the features blind to global gain and offset; exposure, contrast and colour
        # casts live exactly there, so the input's per-channel mean and std join the embedding.
        return torch.cat([h.mean(dim=(2, 3)), h.std(dim=(2, 3)), x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        e = self.embed(x)
        logits = self.classifier(e) if self.classifier is not None else None
        return self.quality(e).squeeze(1), logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """RGB ``(N, 3, H, W)`` in [0, 1] -> quality ``(N,)``, higher is better."""
        return self.forward_all(x)[0]


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {"rankiqa_small": CompactIQA}


def build_architecture(name: str, config: dict[str, Any]) -> nn.Module:
    """A fresh network for a registered architecture name and its integer options."""
    if name not in ARCHITECTURES:
        raise ValueError(
            f"architecture {name!r} is not known; expected one of {sorted(ARCHITECTURES)}. "
            "Fix: train the model with this iqaflow version or add the architecture to nets.compact.ARCHITECTURES"
        )
    bad = {k: v for k, v in config.items() if not isinstance(v, int) or isinstance(v, bool)}
    if bad:
        raise ValueError(f"architecture {name!r}: options must be integers, got {bad}")
    return ARCHITECTURES[name](**config)
