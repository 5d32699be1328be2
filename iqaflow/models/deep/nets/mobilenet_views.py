"""Multi-view ImageNet MobileNet v1 features of a photo: what the default NR scorer regresses on.

Quality lives at two scales: the whole frame (exposure, colour, composition, heavy blur) and the pixels
(noise, fine blur, compression). So each image gives up to six 224x224 views: the whole image resized
(bilinear, antialiased), and crops at native resolution (centre first, then the four corners). The
feature vector is the whole view's pooled features (``LEVELS``) concatenated with the mean of the crop
views' (the mean makes it independent of how many crops a view set has, so one regressor per view set).

Images larger than ``crop_side`` on their shorter side are downscaled to it before cropping, so a crop
sees about the same share of a 12 MP photo as of the 512x512 training photos; smaller ones are
upscaled to 224 on their shorter side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from iqaflow.models.deep.nets.tflite_graph import TFLiteNet
from iqaflow.models.deep.torch_scorer import resize

VIEW = 224
# Global averages of the last layer of each resolution stage (56, 28, 14 and 7 pixels at 224): quality is
# as much in low-level statistics (noise, blur, blocking) as in the semantic last layer (multi-level
# pooled features, as Hosu et al.'s MLSP). 128 + 256 + 512 + 1024 values per view.
LEVELS = (
    "MobilenetV1/MobilenetV1/Conv2d_3_pointwise/Relu6",
    "MobilenetV1/MobilenetV1/Conv2d_5_pointwise/Relu6",
    "MobilenetV1/MobilenetV1/Conv2d_11_pointwise/Relu6",
    "MobilenetV1/Logits/AvgPool_1a/AvgPool",
)
DIM = 1920


@dataclass(frozen=True)
class ViewSet:
    """Which views an image gives: the whole image, and ``crops`` native-resolution crops (0-5)."""

    crops: int = 5
    crop_side: int = 512

    def __post_init__(self) -> None:
        if not 0 <= self.crops <= 5:
            raise ValueError(f"crops: expected 0-5 (centre, then the four corners), got {self.crops}")

    @property
    def count(self) -> int:
        return 1 + self.crops


def crop_offsets(h: int, w: int, count: int) -> list[tuple[int, int]]:
    """Top-left corners of the centre crop, then the four corner crops."""
    spots = [((h - VIEW) // 2, (w - VIEW) // 2), (0, 0), (0, w - VIEW), (h - VIEW, 0), (h - VIEW, w - VIEW)]
    return spots[:count]


def make_views(x: torch.Tensor, views: ViewSet) -> torch.Tensor:
    """``(N, 3, H, W)`` in [0, 1], one shape -> ``(N, V, 3, 224, 224)``: whole image first, then crops."""
    out = [resize(x, (VIEW, VIEW))]
    if views.crops:
        h, w = x.shape[-2:]
        short = min(h, w)
        scale = views.crop_side / short if short > views.crop_side else max(VIEW / short, 1.0)
        if scale != 1.0:
            h, w = max(VIEW, math.floor(h * scale + 0.5)), max(VIEW, math.floor(w * scale + 0.5))
            x = resize(x, (h, w))
        out += [x[:, :, y : y + VIEW, c : c + VIEW] for y, c in crop_offsets(h, w, views.crops)]
    return torch.stack(out, dim=1)


class MobileNetViews(nn.Module):
    """Views in, per-view pooled features out: ``(N, V, 3, 224, 224)`` -> ``(N, V, 1920)`` (``LEVELS``)."""

    def __init__(self, graph: dict) -> None:
        super().__init__()
        self.net = TFLiteNet(graph)
        # The int8 model's input is (u - zero) * scale of the uint8 pixels u; x in [0, 1] is u / 255.
        self.in_gain = 255.0 * float(graph["input_scale"])
        self.in_bias = -float(graph["input_zero"]) * float(graph["input_scale"])

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        n, v = views.shape[:2]
        # In the backbone's dtype: cast its weights once (``.to(torch.bfloat16)``) rather than per call.
        dtype = next(self.net.parameters()).dtype
        x = (views.reshape(n * v, *views.shape[2:]).float() * self.in_gain + self.in_bias).to(dtype)
        pooled = [t.float().mean(dim=(2, 3)) for t in self.net(x, LEVELS)]
        return torch.cat(pooled, dim=1).reshape(n, v, -1)


def pool_views(per_view: torch.Tensor) -> torch.Tensor:
    """``(N, V, D)`` -> ``(N, 2D)``: the whole view's features, then the mean of the crops' (the whole
    view again when there are no crops, so every view set gives the regressor the same layout)."""
    whole = per_view[:, 0]
    crops = per_view[:, 1:].mean(dim=1) if per_view.shape[1] > 1 else whole
    return torch.cat([whole, crops], dim=1)
