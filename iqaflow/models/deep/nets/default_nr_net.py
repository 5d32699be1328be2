"""The network of ``iqaflow_nr``: stacked views -> MobileNet v1 multi-level features -> kernel head -> MOS."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from iqaflow.errors import WeightsError
from iqaflow.models.deep.nets.kernel_head import KernelHead
from iqaflow.models.deep.nets.mobilenet_views import DIM, VIEW, MobileNetViews, ViewSet, pool_views


def view_set(head: dict[str, Any]) -> ViewSet:
    """The views a head was fitted on (recorded in it by ``iqaflow train-default``)."""
    return ViewSet(crops=int(head["crops"]), crop_side=int(head["crop_side"]))


class DefaultNrNet(nn.Module):
    """``(N, 3V, 224, 224)`` stacked views -> ``(N,)`` MOS; the head always runs in fp32."""

    def __init__(self, graph: dict[str, Any], head: dict[str, Any]) -> None:
        super().__init__()
        self.views = view_set(head)
        self.backbone = MobileNetViews(graph)
        self.head = KernelHead(head)
        if self.head.mean.numel() != 2 * DIM:
            raise WeightsError(f"head made for {self.head.mean.numel()} features, this iqaflow computes {2 * DIM}. "
                               "Fix: retrain with `iqaflow train-default --config configs/default_nr.yaml`")

    def features(self, stacked: torch.Tensor) -> torch.Tensor:
        n = stacked.shape[0]
        per_view = self.backbone(stacked.reshape(n, self.views.count, 3, VIEW, VIEW))
        return pool_views(per_view.float())

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        feats = self.features(stacked)
        with torch.autocast(stacked.device.type, enabled=False):
            return self.head(feats)
