"""Pick the compute device on the worker that runs the scorer (not on the client)."""

from __future__ import annotations


def resolve_device(requested: str) -> str:
    if requested == "cpu":
        return "cpu"
    import torch

    if requested == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but CUDA is not available on this worker")
        return "cuda"
    return "cuda" if torch.cuda.is_available() else "cpu"


def native_bf16() -> bool:
    """Whether this CPU runs bfloat16 convolutions natively (oneDNN on AVX512-BF16 or AMX): there bf16
    autocast is about 2.4x faster than fp32 for MobileNet on one core; emulated bf16 would be slower."""
    import torch

    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - builds without oneDNN
        return False
