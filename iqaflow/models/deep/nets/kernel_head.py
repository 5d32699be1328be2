"""A fitted RBF support-vector regressor as a torch module, so it runs in the same batch and on the same
device as the backbone that feeds it (CPU, CUDA, the nvJPEG tensor path).

``y = sum_i coef_i * exp(-gamma * |z - s_i|^2) + intercept`` on standardised, PCA-projected features
``z = ((f - mean) / std) @ components.T``, then ``mos = 100 * (y * target_std + target_mean)``, clipped to
0-100. The fit is scikit-learn's ``SVR`` (``iqaflow.tasks.learn.default_nr``); only its arrays are kept, as
tensors (``torch.load(weights_only=True)`` reads them, no pickles).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from iqaflow.errors import WeightsError

HEAD_FORMAT = 1
HEAD_KEYS = ("mean", "std", "components", "support", "coef", "intercept", "gamma", "target_mean", "target_std")


class KernelHead(nn.Module):
    """Pooled features ``(N, D)`` -> MOS on 0-100, higher is better (clipped to the scale)."""

    def __init__(self, state: dict[str, Any]) -> None:
        super().__init__()
        missing = [k for k in HEAD_KEYS if k not in state]
        if missing or int(state.get("head_format", -1)) != HEAD_FORMAT:
            raise WeightsError(f"not an iqaflow_nr head (format {state.get('head_format')!r}, missing {missing}). "
                               "Fix: produce it with `iqaflow train-default --config configs/default_nr.yaml`")
        for key in HEAD_KEYS:
            self.register_buffer(key, torch.as_tensor(state[key]).float().clone())
        # |s|^2 once: the kernel is then one matrix product per batch.
        self.register_buffer("support_sq", (self.support**2).sum(dim=1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        z = ((features.float() - self.mean) / self.std) @ self.components.T
        d2 = (z**2).sum(dim=1, keepdim=True) - 2 * z @ self.support.T + self.support_sq
        y = torch.exp(-self.gamma * d2.clamp_min(0)) @ self.coef + self.intercept
        return (100 * (y * self.target_std + self.target_mean)).clamp(0.0, 100.0)


def head_state(mean: Any, std: Any, components: Any, support: Any, coef: Any, intercept: float, gamma: float,
               target_mean: float, target_std: float) -> dict[str, Any]:
    """The tensors ``KernelHead`` reads, from a fit's arrays. The two large ones, the PCA directions and the
    support vectors, are stored as float16 (half the file; ``KernelHead`` computes in float32)."""
    def t(v: Any, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.as_tensor(v).to(dtype).clone()

    return {"head_format": HEAD_FORMAT, "mean": t(mean), "std": t(std), "components": t(components, torch.float16),
            "support": t(support, torch.float16), "coef": t(coef).reshape(-1), "intercept": t(intercept),
            "gamma": t(gamma), "target_mean": t(target_mean), "target_std": t(target_std)}
