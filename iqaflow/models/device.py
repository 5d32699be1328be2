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
