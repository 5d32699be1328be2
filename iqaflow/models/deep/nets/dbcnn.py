"""DBCNN (Zhang et al. 2020, "Blind Image Quality Assessment Using a Deep Bilinear Convolutional Neural Network").

Two branches see the same ImageNet-normalised image: S-CNN, a small net the paper pre-trains to
classify synthetic distortion type and level (its nine conv-BN-ReLU layers, four with stride 2),
and the VGG16 trunk up to relu5_3 (authentic distortions). Both end at 1/16 resolution; their
feature maps are bilinearly pooled (the mean outer product over positions), passed through a
square root and L2 normalisation, and a linear layer gives the score. The published S-CNN
(``scnn.pkl``, pre-trained on distortion type and level) ships with iqaflow; the VGG16 trunk is
torchvision's ImageNet file, and the linear head comes from fitting to human scores. Module names follow
the reference code (zwx8981/DBCNN: ``features1`` VGG, ``features2`` S-CNN, ``fc``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from iqaflow.models.deep.nets.trunks import Normalise, fp32, vgg16_features

# (in, out, stride) of the S-CNN convolutions, each followed by BatchNorm and ReLU.
SCNN_LAYERS = ((3, 48, 1), (48, 48, 2), (48, 64, 1), (64, 64, 2), (64, 64, 1), (64, 64, 2),
               (64, 128, 1), (128, 128, 1), (128, 128, 2))  # fmt: skip


def scnn_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    for cin, cout, stride in SCNN_LAYERS:
        layers += [nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def bilinear_pool(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over positions of the outer product of ``a (N, Ca, H, W)`` and ``b (N, Cb, H, W)``,
    square-rooted and L2-normalised: ``(N, Ca * Cb)``.

    ``sqrt(x + 1e-8)`` as the reference code: both branches end in a ReLU, so ``x >= 0`` (the clamp
    only guards rounding); a signed square root would give 0 instead of 1e-4 where ``x`` is 0.
    """
    n, ca, h, w = a.shape
    x = torch.bmm(a.reshape(n, ca, h * w), b.reshape(n, b.shape[1], h * w).transpose(1, 2)) / (h * w)
    x = torch.sqrt(x.reshape(n, -1).clamp_min(0) + 1e-8)
    return F.normalize(x, dim=1)


class DBCNN(nn.Module):
    """State dict: ``features1.N.*`` (VGG16 indices 0-29), ``features2.N.*`` (S-CNN), ``fc.*``."""

    def __init__(self) -> None:
        super().__init__()
        self.normalise = Normalise()
        self.features1 = vgg16_features()[:30]
        self.features2 = scnn_features()
        self.fc = nn.Linear(512 * 128, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(N, 3, H, W)`` in [0, 1] -> scores ``(N,)``."""
        x = self.normalise(x)
        a = self.features1(x)
        b = self.features2(x)
        if b.shape[2:] != a.shape[2:]:  # odd sizes round differently in the two branches
            b = F.interpolate(b, size=a.shape[2:], mode="bilinear", align_corners=True)
        with fp32(x):  # sums over positions overflow fp16
            return self.fc(bilinear_pool(a.float(), b.float())).squeeze(1)
