"""Images per second of the deep scorers on seeded test weights (speed only; the scores mean nothing).

    python bench/deep_speed.py --device cpu --threads 1 --size 512 --n 4
    python bench/deep_speed.py --device cuda --size 512 --n 64 --check-amp

``--check-amp`` (CUDA) also scores with autocast disabled and prints the largest relative
difference between the fp16-autocast and fp32 scores.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from iqaflow.models import weights
from iqaflow.models.deep import zoo as deep_zoo
from iqaflow.models.deep.torch_scorer import TorchScorer
from iqaflow.models.weights import WeightsStore

# The registered deep scorers, without importing every other scorer module (and its dependencies).
DEEP = {
    c.info.name: c
    for c in vars(deep_zoo).values()
    if isinstance(c, type) and issubclass(c, TorchScorer) and hasattr(c, "info")
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--n", type=int, default=4, help="images per timed batch")
    ap.add_argument("--models", default="", help="comma-separated names (default: every deep scorer)")
    ap.add_argument("--check-amp", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    names = args.models.split(",") if args.models else sorted(DEEP)
    rng = np.random.default_rng(0)
    rgb = [rng.random((args.size, args.size, 3), dtype=np.float32) for _ in range(args.n)]
    with tempfile.TemporaryDirectory() as tmp:
        weights._store = WeightsStore(tmp)
        for name in names:
            cls = DEEP[name]
            cls.make_test_weights(weights.get_store())
            scorer = cls()
            scorer.setup(args.device)
            imgs = [i.mean(axis=2) for i in rgb] if cls.info.colour == "gray" else rgb

            def once(s: TorchScorer = scorer, imgs: list[np.ndarray] = imgs) -> np.ndarray:
                out = s.score_pairs(imgs, imgs[::-1]) if s.info.kind == "fr" else s.score(imgs)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                return out

            out = once()  # warm-up (cuDNN autotune, allocator)
            t0 = time.perf_counter()
            once()
            dt = time.perf_counter() - t0
            line = f"{name:12s} {cls.info.kind}  {args.n / dt:8.2f} images/s  ({dt / args.n * 1e3:8.1f} ms/image)"
            if args.check_amp and args.device.startswith("cuda"):
                scorer._forward = _fp32_forward(scorer)  # type: ignore[method-assign]
                ref = once()
                rel = np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-12)
                line += f"  amp-vs-fp32 max rel diff {rel:.2e}"
            print(line, flush=True)


def _fp32_forward(scorer: TorchScorer):  # type: ignore[no-untyped-def]
    def forward(*inputs: torch.Tensor) -> torch.Tensor:
        tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # true fp32
        try:
            return scorer.net(*inputs).float().reshape(-1)  # type: ignore[misc]
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32

    return forward


if __name__ == "__main__":
    main()
