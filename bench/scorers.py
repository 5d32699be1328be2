"""Images/s per scorer at 1024x768 on one CPU thread, and ratios against pyiqa and piq.

    python bench/scorers.py [--n 16] [--json bench/scorers.json] [--pyiqa-path DIR] [--only ssim,vif]

pyiqa is never a dependency (PolyForm Noncommercial); to compare, install it into a side
folder (`pip install --target /tmp/benchdeps --no-deps pyiqa huggingface_hub ...`) and pass
``--pyiqa-path``. Ratios are measured in the same run on the same images. Each row compares like
with like: pyiqa's ``ssim``, ``ms_ssim``, ``vif`` and ``gmsd`` follow the authors' MATLAB code on
luminance, as ours do; piq's RGB SSIM / MS-SSIM and pixel-domain VIF are our ``*_rgb`` and ``vifp``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from iqaflow.evaluation import synth  # noqa: E402
from iqaflow.models.colour import convert  # noqa: E402
from iqaflow.models.registry import all_scorers  # noqa: E402
from iqaflow.models.weights import WeightsStore, configure_store, get_store  # noqa: E402

# Metrics pyiqa and piq share with iqaflow: our name -> (pyiqa name, piq callable on NCHW tensors).
SHARED: dict[str, tuple[str | None, Callable | None]] = {}


def _piq_fns() -> None:
    import piq

    SHARED.update({
        "psnr": ("psnr", lambda x, y: piq.psnr(x, y, data_range=1.0, reduction="none")),
        "ssim": ("ssim", None),
        "ssim_rgb": (None, lambda x, y: piq.ssim(x, y, data_range=1.0, reduction="none")),
        "ms_ssim": ("ms_ssim", None),
        "ms_ssim_rgb": (None, lambda x, y: piq.multi_scale_ssim(x, y, data_range=1.0, reduction="none")),
        "vif": ("vif", None),
        "vifp": (None, lambda x, y: piq.vif_p(x, y, data_range=1.0, reduction="none")),
        # piq's GMSD is GMSD.m's maths without rgb2gray's rounding to 8 bits (~1e-4 apart).
        "gmsd": ("gmsd", lambda x, y: piq.gmsd(x, y, data_range=1.0, reduction="none")),
        "fsim": ("fsim", lambda x, y: piq.fsim(x, y, data_range=1.0, reduction="none")),
        "vsi": ("vsi", lambda x, y: piq.vsi(x, y, data_range=1.0, reduction="none")),
        "haarpsi": ("haarpsi", lambda x, y: piq.haarpsi(x, y, data_range=1.0, reduction="none")),
        "brisque": ("brisque", None),
        "niqe": ("niqe", None),
    })


def images(n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``n`` 1024x768 distorted/reference pairs made from scikit-image pictures."""
    srcs = synth.skimage_images()
    refs, dists = [], []
    for i, (_, img) in enumerate(synth.random_crops(srcs, n, 10_000, seed=0)):
        ref = cv2.resize(img, (1024, 768), interpolation=cv2.INTER_AREA)
        refs.append(ref)
        dists.append(synth.noise(synth.blur(ref, 1.0 + i % 3), 5.0 + 3 * (i % 4), seed=i))
    return dists, refs


def rate(fn: Callable[[], object], n: int, repeat: int = 2) -> float:
    fn()  # warm-up (allocations, lazy init)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n / best


def to_tensor(imgs: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float().div(255)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--json", default="bench/scorers.json")
    ap.add_argument("--pyiqa-path", default=None)
    ap.add_argument("--only", default=None, help="comma-separated scorer names (default: all)")
    args = ap.parse_args()
    only = set(args.only.split(",")) if args.only else None
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    _piq_fns()
    pyiqa = None
    if args.pyiqa_path:
        sys.path.insert(0, args.pyiqa_path)
        import pyiqa  # type: ignore[no-redef]

    tmp_store = Path("/tmp/iqaflow-bench-weights")
    configure_store(str(tmp_store))
    dists, refs = images(args.n)
    x, y = to_tensor(dists), to_tensor(refs)
    rows = []
    for name, cls in all_scorers().items():
        if only is not None and name not in only:
            continue
        info = cls.info
        if info.weights and any(get_store().status(s) != "ready" for s in info.weights):
            cls.make_test_weights(WeightsStore(str(tmp_store)), seed=0)  # speed does not depend on values
        scorer = cls()
        scorer.setup("cpu")
        a = [convert(d, info.colour) for d in dists]
        b = [convert(r, info.colour) for r in refs]
        ours_fn = (lambda s=scorer, a=a, b=b: s.score_pairs(a, b)) if info.kind == "fr" else (
            lambda s=scorer, a=a: s.score(a))
        ours_vals = ours_fn()[:, 0]
        row = {"scorer": name, "kind": info.kind, "iqaflow_img_s": rate(ours_fn, args.n)}
        if name in SHARED:
            pyiqa_name, piq_fn = SHARED[name]
            if piq_fn is not None:
                row["piq_img_s"] = rate(lambda f=piq_fn: f(x, y), args.n)
                row["piq_max_abs_diff"] = float(np.max(np.abs(piq_fn(x, y).numpy() - ours_vals)))
            if pyiqa is not None and pyiqa_name is not None:
                try:
                    metric = pyiqa.create_metric(pyiqa_name, device="cpu")
                    fn = (lambda m=metric: m(x, y)) if info.kind == "fr" else (lambda m=metric: m(x))
                    row["pyiqa_img_s"] = rate(fn, args.n, repeat=1)
                    row["pyiqa_max_abs_diff"] = float(np.max(np.abs(fn().flatten().numpy() - ours_vals)))
                except Exception as exc:  # pyiqa's NIQE/BRISQUE need downloaded parameters
                    row["pyiqa_note"] = f"{type(exc).__name__}: {str(exc)[:60]}"
        for other in ("piq", "pyiqa"):
            if f"{other}_img_s" in row:
                row[f"x_vs_{other}"] = row["iqaflow_img_s"] / row[f"{other}_img_s"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    Path(args.json).write_text(json.dumps(rows, indent=2))
    print(f"\n{'scorer':<12}{'kind':>5}{'img/s':>9}{'piq':>9}{'x piq':>8}{'pyiqa':>9}{'x pyiqa':>9}  agreement")
    for r in rows:
        def g(k: str, fmt: str = "{:.1f}", r: dict = r) -> str:
            return fmt.format(r[k]) if k in r else "-"
        agree = ", ".join(f"{k.split('_')[0]} {r[k]:.1e}" for k in ("piq_max_abs_diff", "pyiqa_max_abs_diff") if k in r)
        print(f"{r['scorer']:<12}{r['kind']:>5}{g('iqaflow_img_s'):>9}{g('piq_img_s'):>9}{g('x_vs_piq', '{:.2f}'):>8}"
              f"{g('pyiqa_img_s'):>9}{g('x_vs_pyiqa', '{:.2f}'):>9}  {agree}")


if __name__ == "__main__":
    main()
