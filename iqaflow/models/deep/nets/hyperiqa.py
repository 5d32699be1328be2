"""HyperIQA (Su et al. 2020, "Blindly Assess Image Quality in the Wild Guided by a Self-Adaptive Hyper Network").

A ResNet backbone sees a 224x224 patch. Its last feature map drives a hyper network that
*generates* the weights and biases of a small target network (four FC layers with sigmoids,
224-112-56-28-14-1); local distortion-aware (LDA) features pooled from all four stages form that
target network's input vector. Content decides how quality is judged; the target net judges it.
Module names follow the reference code (SSL92/hyperIQA: ``res``, ``conv1``, ``fcNw_conv``,
``fcNb_fc``) so its checkpoints load without renaming.
"""

from __future__ import annotations

from typing import Literal

import torch
import torchvision
from torch import nn

from iqaflow.models.deep.nets.trunks import Normalise, fp32

Backbone = Literal["resnet50", "resnet18"]
STAGE_CHANNELS: dict[str, tuple[int, int, int, int]] = {
    "resnet50": (256, 512, 1024, 2048),
    "resnet18": (64, 128, 256, 512),
}
PATCH = 224
LDA_OUT = 16
HYPER_IN = 112
TARGET_SIZES = (224, 112, 56, 28, 14)  # target-net input and the four hidden widths
FEATURE_SIZE = 7  # spatial size of the last stage for a 224 patch


class ResNetBackbone(nn.Module):
    """torchvision ResNet stages plus the LDA branches: 1x1 conv, 7x7 average pool, FC, per stage."""

    def __init__(self, backbone: Backbone = "resnet50") -> None:
        super().__init__()
        if backbone not in STAGE_CHANNELS:
            raise ValueError(f"HyperIQA backbone must be one of {sorted(STAGE_CHANNELS)}, got {backbone!r}")
        tv = getattr(torchvision.models, backbone)(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = tv.conv1, tv.bn1, tv.relu, tv.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = tv.layer1, tv.layer2, tv.layer3, tv.layer4
        c1, c2, c3, c4 = STAGE_CHANNELS[backbone]
        # 56x56, 28x28, 14x14 maps pool to 8x8, 4x4, 2x2 before the FC, as in the paper.
        self.lda1_pool = nn.Sequential(nn.Conv2d(c1, 16, 1, bias=False), nn.AvgPool2d(7, stride=7))
        self.lda1_fc = nn.Linear(16 * 64, LDA_OUT)
        self.lda2_pool = nn.Sequential(nn.Conv2d(c2, 32, 1, bias=False), nn.AvgPool2d(7, stride=7))
        self.lda2_fc = nn.Linear(32 * 16, LDA_OUT)
        self.lda3_pool = nn.Sequential(nn.Conv2d(c3, 64, 1, bias=False), nn.AvgPool2d(7, stride=7))
        self.lda3_fc = nn.Linear(64 * 4, LDA_OUT)
        self.lda4_pool = nn.AvgPool2d(7, stride=7)
        self.lda4_fc = nn.Linear(c4, TARGET_SIZES[0] - 3 * LDA_OUT)
        for m in (self.lda1_pool[0], self.lda2_pool[0], self.lda3_pool[0],
                  self.lda1_fc, self.lda2_fc, self.lda3_fc, self.lda4_fc):  # fmt: skip
            nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (last feature map ``(N, C4, 7, 7)``, target-net input vector ``(N, 224)``)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        s1 = self.layer1(x)
        s2 = self.layer2(s1)
        s3 = self.layer3(s2)
        s4 = self.layer4(s3)
        with fp32(x):  # cheap, and the target net's input: kept out of fp16 (see HyperIQA.forward)
            v1 = self.lda1_fc(self.lda1_pool(s1.float()).flatten(1))
            v2 = self.lda2_fc(self.lda2_pool(s2.float()).flatten(1))
            v3 = self.lda3_fc(self.lda3_pool(s3.float()).flatten(1))
            v4 = self.lda4_fc(self.lda4_pool(s4.float()).flatten(1))
        return s4, torch.cat([v1, v2, v3, v4], dim=1)


def target_net(x: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor]) -> torch.Tensor:
    """Per-sample FC layers: ``weights[k] (N, out, in)``, ``biases[k] (N, out)``; sigmoid after all but the last."""
    for k, (w, b) in enumerate(zip(weights, biases, strict=True)):
        x = torch.bmm(w, x.unsqueeze(2)).squeeze(2) + b
        if k < len(weights) - 1:
            x = torch.sigmoid(x)
    return x


class HyperIQA(nn.Module):
    """State dict: ``res.*`` (backbone + LDA), ``conv1.*`` and the ``fc{1..5}{w,b}_*`` generators."""

    def __init__(self, backbone: Backbone = "resnet50") -> None:
        super().__init__()
        self.normalise = Normalise()
        self.res = ResNetBackbone(backbone)
        c4 = STAGE_CHANNELS[backbone][3]
        self.conv1 = nn.Sequential(
            nn.Conv2d(c4, c4 // 2, 1), nn.ReLU(inplace=True),
            nn.Conv2d(c4 // 2, c4 // 4, 1), nn.ReLU(inplace=True),
            nn.Conv2d(c4 // 4, HYPER_IN, 1), nn.ReLU(inplace=True),
        )  # fmt: skip
        self.pool = nn.AdaptiveAvgPool2d(1)
        s, f2 = TARGET_SIZES, FEATURE_SIZE**2
        self.fc1w_conv = nn.Conv2d(HYPER_IN, s[0] * s[1] // f2, 3, padding=1)
        self.fc1b_fc = nn.Linear(HYPER_IN, s[1])
        self.fc2w_conv = nn.Conv2d(HYPER_IN, s[1] * s[2] // f2, 3, padding=1)
        self.fc2b_fc = nn.Linear(HYPER_IN, s[2])
        self.fc3w_conv = nn.Conv2d(HYPER_IN, s[2] * s[3] // f2, 3, padding=1)
        self.fc3b_fc = nn.Linear(HYPER_IN, s[3])
        self.fc4w_conv = nn.Conv2d(HYPER_IN, s[3] * s[4] // f2, 3, padding=1)
        self.fc4b_fc = nn.Linear(HYPER_IN, s[4])
        self.fc5w_fc = nn.Linear(HYPER_IN, s[4])
        self.fc5b_fc = nn.Linear(HYPER_IN, 1)
        for name, m in self.named_children():
            if name.startswith("fc"):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Patches ``(N, 3, 224, 224)`` in [0, 1] -> scores ``(N,)``."""
        feat, vec = self.res(self.normalise(x))
        # Only the backbone runs in fp16 under autocast: the hyper network *generates weights*, and
        # rounding those (and the target net's input) to fp16 moved scores by ~1% in tests; it is <1% of the FLOPs.
        with fp32(x):
            h = self.conv1(feat.float())  # (N, 112, 7, 7)
            n, s = h.shape[0], TARGET_SIZES
            g = self.pool(h).flatten(1)
            # The reference code views the conv outputs as (N, out, in): keep that order for its weights.
            weights = [
                self.fc1w_conv(h).reshape(n, s[1], s[0]),
                self.fc2w_conv(h).reshape(n, s[2], s[1]),
                self.fc3w_conv(h).reshape(n, s[3], s[2]),
                self.fc4w_conv(h).reshape(n, s[4], s[3]),
                self.fc5w_fc(g).reshape(n, 1, s[4]),
            ]
            biases = [self.fc1b_fc(g), self.fc2b_fc(g), self.fc3b_fc(g), self.fc4b_fc(g), self.fc5b_fc(g)]
            return target_net(vec.float(), weights, biases).squeeze(1)
