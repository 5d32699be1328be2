"""End-to-end throughput and memory: decode-only vs plain scorer loop vs the full flow.

    python bench/run.py --n 5000 [--workdir /tmp/iqaflow-bench] [--json bench/run.json] [--scaling]

Generates N 1024x768 JPEGs once (cached in --workdir), then measures, in one run:
  (a) decode-only loop (PIL, one process)            the physical limit on this CPU
  (b) the full flow (Prefect + Dask, W workers)      what users run
  (c) the same scorers in a plain loop (one process)
  with --scaling: the full flow with 1 and 2 workers, and peak RSS of the flow process.
Ratios (b)/(c) and (c)/(a) are per worker process so that a 2-core box compares like with like.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402


def make_images(folder: Path, n: int) -> list[Path]:
    from iqaflow import synth

    folder.mkdir(parents=True, exist_ok=True)
    existing = sorted(folder.glob("*.jpg"))
    if len(existing) >= n:
        return existing[:n]
    srcs = synth.skimage_images()
    crops = synth.random_crops(srcs, 64, 10_000, seed=0)
    bases = [cv2.resize(img, (1024, 768), interpolation=cv2.INTER_AREA) for _, img in crops]
    for i in range(len(existing), n):
        img = bases[i % len(bases)]
        if i % 3 == 1:
            img = synth.blur(img, 1 + i % 4)
        elif i % 3 == 2:
            img = synth.noise(img, 4 + i % 20, seed=i)
        (folder / f"img{i:06d}.jpg").write_bytes(synth.jpeg_bytes(img, 90))
    return sorted(folder.glob("*.jpg"))[:n]


def decode_only(paths: list[Path]) -> float:
    from iqaflow.tasks.decode import decode

    t0 = time.perf_counter()
    for p in paths:
        decode(p.read_bytes())
    return len(paths) / (time.perf_counter() - t0)


def plain_loop(paths: list[Path], models: list[str]) -> float:
    from iqaflow.models.colour import convert
    from iqaflow.models.registry import create_scorer
    from iqaflow.tasks.decode import decode

    scorers = [create_scorer(m) for m in models]
    t0 = time.perf_counter()
    for p in paths:
        px = decode(p.read_bytes()).pixels
        for s in scorers:
            s.score([convert(px, s.info.colour)])
    return len(paths) / (time.perf_counter() - t0)


def full_flow(folder: Path, out: Path, workers: int, models: list[str], shard_size: int) -> dict[str, float]:
    """Run the CLI as users do, in a child process, and read its summary and peak RSS."""
    code = (
        "import resource, sys, json\n"
        "from iqaflow.config import build_config\n"
        "from iqaflow.flows.score import run_score\n"
        f"s = run_score(build_config({{'source': {str(folder)!r}, 'out': {str(out)!r}, 'workers': {workers},"
        f" 'shard_size': {shard_size}, 'models': {models!r}, 'run_id': 'bench-w{workers}', 'track': False}}))\n"
        "print(json.dumps({'images': s.images, 'seconds': s.seconds,"
        " 'rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,"
        " 'children_rss_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PREFECT_LOGGING_LEVEL": "ERROR"})
    out_json = json.loads(res.stdout.strip().splitlines()[-1])
    out_json["img_s"] = out_json["images"] / out_json["seconds"]
    return out_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--workdir", default="/tmp/iqaflow-bench")
    ap.add_argument("--json", default="bench/run.json")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--shard-size", type=int, default=500)
    ap.add_argument("--models", default="sharpness,exposure,noise")
    ap.add_argument("--scaling", action="store_true")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    models = args.models.split(",")
    work = Path(args.workdir)
    paths = make_images(work / "images", args.n)
    sample = paths[: min(len(paths), 500)]
    rows: dict[str, object] = {"n": len(paths), "models": models, "cpu_count": os.cpu_count()}
    rows["decode_only_img_s"] = decode_only(sample)
    rows["plain_loop_img_s"] = plain_loop(sample, models)
    import shutil

    shutil.rmtree(work / "out", ignore_errors=True)
    flow = full_flow(work / "images", work / "out", args.workers, models, args.shard_size)
    rows["flow"] = flow
    per_worker = flow["img_s"] / args.workers
    rows["flow_per_worker_vs_plain_loop"] = per_worker / rows["plain_loop_img_s"]  # type: ignore[operator]
    rows["plain_loop_vs_decode_only"] = rows["plain_loop_img_s"] / rows["decode_only_img_s"]  # type: ignore[operator]
    if args.scaling:
        shutil.rmtree(work / "out", ignore_errors=True)
        one = full_flow(work / "images", work / "out", 1, models, args.shard_size)
        rows["flow_1_worker"] = one
        rows["scaling_2_vs_1"] = flow["img_s"] / one["img_s"]
    rows["bench_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(args.json).write_text(json.dumps(rows, indent=2))
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    _ = np  # numpy is imported first for cv2's sake
    main()
