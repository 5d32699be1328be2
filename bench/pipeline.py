"""The full flow against the same work without orchestration: throughput, scaling and memory.

    python bench/pipeline.py --n 5000 [--big 50000] [--workers 2] [--json bench/results/pipeline.json]

On one generated collection of N 1024x768 JPEGs (cached in --workdir), in one run:
  decode-only    read + decode in a plain loop, one thread: the physical limit on this CPU
  plain loop     read + decode + the same scorers, one thread
  flow, 1 worker the CLI's flow (Prefect + a local Dask cluster), one single-threaded worker
  flow, W workers
  memory         peak RSS of the flow process and of each Dask worker, at N and at --big images
                 (the big collection repeats the N files under other names: hard links, no disk cost)
Goals: flow(1 worker) >= 0.85 x plain loop; flow(2 workers) >= 1.8 x flow(1 worker); worker peak RSS
at --big within 10% of that at N. Every process is held to one compute thread (OMP, OpenCV, torch,
the decode pool) so that the ratios compare like with like; the box should otherwise be idle.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                 "IQAFLOW_DECODE_THREADS": "1", "OPENCV_FOR_THREADS_NUM": "1"}  # OpenCV ignores OMP_*
os.environ.update(SINGLE_THREAD)

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402

from iqaflow.config.run import DEFAULT_MODELS  # noqa: E402


def make_collection(folder: Path, n: int, side: tuple[int, int] = (1024, 768)) -> list[Path]:
    """``n`` distinct JPEGs (crops of scikit-image pictures, a third blurred, a third noisy), cached."""
    from iqaflow.evaluation import synth

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"img{i:06d}.jpg" for i in range(n)]
    missing = [i for i, p in enumerate(paths) if not p.exists()]
    if missing:
        crops = synth.random_crops(synth.skimage_images(), 97, 10_000, seed=0)
        bases = [cv2.resize(img, side, interpolation=cv2.INTER_AREA) for _, img in crops]
        for i in missing:
            img = bases[i % len(bases)]
            if i % 3 == 1:
                img = synth.blur(img, 0.5 + (i % 7) / 2)
            elif i % 3 == 2:
                img = synth.noise(img, 2 + i % 25, seed=i)
            paths[i].write_bytes(synth.jpeg_bytes(img, 60 + i % 40))
    return paths


def linked_collection(folder: Path, files: list[Path], n: int) -> Path:
    """A folder of ``n`` names hard-linked round-robin to ``files``: a bigger collection at no disk cost."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        p = folder / f"img{i:07d}.jpg"
        if not p.exists():
            os.link(files[i % len(files)], p)
    return folder


def isolated(fn: Callable[..., float], *args: object) -> dict[str, float]:
    """``fn(*args)`` (images/s) in a fresh single-threaded process, with that process's peak RSS."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_timed_child, fn, *args).result()


def _timed_child(fn: Callable[..., float], *args: object) -> dict[str, float]:
    import resource

    cv2.setNumThreads(1)
    img_s = fn(*args)
    return {"img_s": img_s, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def decode_only(paths: list[Path]) -> float:
    from iqaflow.tasks.decode import decode

    t0 = time.perf_counter()
    for p in paths:
        decode(p.read_bytes())
    return len(paths) / (time.perf_counter() - t0)


def plain_loop(paths: list[Path], models: list[str]) -> float:
    """The same scorers on the same files, as a user's own script would run them."""
    from iqaflow.models.colour import convert
    from iqaflow.models.registry import create_scorer
    from iqaflow.tasks.decode import decode

    scorers = [create_scorer(m) for m in models]
    for s in scorers:  # warm-up outside the clock, as the flow's workers load models before scoring
        s.score([convert(decode(paths[0].read_bytes()).pixels, s.info.colour)])
    t0 = time.perf_counter()
    for p in paths:
        px = decode(p.read_bytes()).pixels
        for s in scorers:
            s.score([convert(px, s.info.colour)])
    return len(paths) / (time.perf_counter() - t0)


def _is_worker(role: str) -> bool:
    """Dask workers are the flow's descendants started by multiprocessing (role: their command line)."""
    return "multiprocessing" in role


class TreeRSS:
    """Samples the resident memory of a process and its descendants; keeps each one's peak."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        self.root, self.every = pid, every
        self.peaks: dict[int, tuple[float, str]] = {}
        self.worker_samples: list[tuple[float, float]] = []  # (time, largest worker RSS) per sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> TreeRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                root = psutil.Process(self.root)
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            largest_worker = 0.0
            for p in procs:
                try:
                    mb = p.memory_info().rss / 2**20
                    role = "flow" if p.pid == self.root else " ".join(p.cmdline()[1:4])[:60]
                except psutil.Error:
                    continue
                if mb > self.peaks.get(p.pid, (0.0, ""))[0]:
                    self.peaks[p.pid] = (mb, role)
                if _is_worker(role):
                    largest_worker = max(largest_worker, mb)
            self.worker_samples.append((time.monotonic(), largest_worker))

    def summary(self) -> dict[str, float]:
        flow = self.peaks.get(self.root, (0.0, ""))[0]
        # the Prefect API server, when one runs as a subprocess, is reported apart from the workers
        workers = [mb for pid, (mb, role) in self.peaks.items() if pid != self.root and _is_worker(role)]
        others = [mb for pid, (mb, role) in self.peaks.items() if pid != self.root and not _is_worker(role)]
        return {"flow_peak_rss_mb": flow, "worker_peak_rss_mb": max(workers, default=0.0),
                "workers_seen": len(workers), "other_peak_rss_mb": max(others, default=0.0),
                "worker_peak_rss_mb_by_quarter": self.quarters()}

    def quarters(self) -> list[float]:
        """Largest worker RSS in each quarter of the time workers ran: growth vs a plateau within a run."""
        live = [(t, mb) for t, mb in self.worker_samples if mb > 0]
        if not live:
            return []
        t0, span = live[0][0], max(live[-1][0] - live[0][0], 1e-9)
        peaks = [0.0] * 4
        for t, mb in live:
            q = min(int(4 * (t - t0) / span), 3)
            peaks[q] = max(peaks[q], mb)
        return peaks


_CHILD = """
import json, sys, time
from iqaflow.config.run import build_config
from iqaflow.flows.score import run_score
cfg = json.loads(sys.argv[1])
t0 = time.perf_counter()
s = run_score(build_config(cfg))
print(json.dumps({"images": s.images, "ok": s.ok, "errors": s.errors, "shards": s.shards,
                  "wall_s": time.perf_counter() - t0, "flow_seconds": s.seconds, "shard_seconds": s.shard_seconds,
                  "images_per_shard_second": s.images_per_shard_second}))
"""


def full_flow(folder: Path, out: Path, workers: int | None, models: list[str], shard_size: int,
              **config: object) -> dict[str, float]:
    """The flow as the CLI runs it, in a child process (Prefect's API included), RSS sampled meanwhile;
    ``config`` adds RunConfig fields (device, weights...)."""
    shutil.rmtree(out, ignore_errors=True)
    cfg = {"source": str(folder), "out": str(out), "workers": workers, "threads_per_worker": 1,
           "shard_size": shard_size, "models": models, "run_id": f"bench-w{workers}", "track": False, **config}
    env = {**os.environ, **SINGLE_THREAD, "PREFECT_LOGGING_LEVEL": "ERROR"}
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    with TreeRSS(proc.pid) as rss:
        stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"flow failed ({proc.returncode}):\n{stderr[-3000:]}")
    row = json.loads(stdout.strip().splitlines()[-1])
    row.update(rss.summary())
    row["img_s"] = row["images"] / row["wall_s"]
    # where the time that does not scale with workers goes: start-up, report and exit; listing, the
    # summary and the last shards ending apart (shard_seconds adds up every worker's time in shards)
    row["outside_flow_s"] = row["wall_s"] - row["flow_seconds"]
    from iqaflow.flows.cluster import CPU_WORKERS  # not at the top: the timed child processes import this module

    row["in_flow_outside_shards_s"] = row["flow_seconds"] - row["shard_seconds"] / (workers or CPU_WORKERS)
    shutil.rmtree(out, ignore_errors=True)
    return row


def memory(res: dict[str, object], paths: list[Path], source: Path, work: Path, models: list[str],
           args: argparse.Namespace, small: dict[str, float] | None = None) -> dict[str, object]:
    """Peak RSS per worker on args.n vs args.big images (hard links to the same files), same workers."""
    if small is None:
        small = full_flow(source, work / "out", args.workers, models, args.shard_size, device=args.device)
        res[f"flow_{args.workers}_workers"] = small
    big = linked_collection(work / f"linked-{args.big}", paths, args.big)
    b = full_flow(big, work / "out", args.workers, models, args.shard_size, device=args.device)
    res[f"flow_{args.workers}_workers_{args.big}"] = b
    res["worker_rss_big_vs_n"] = b["worker_peak_rss_mb"] / small["worker_peak_rss_mb"]
    res["flow_rss_big_vs_n"] = b["flow_peak_rss_mb"] / small["flow_peak_rss_mb"]
    return res


def _median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    """The run with the median speed (the lower middle one of an even count), with every run's speed."""
    ranked = sorted(runs, key=lambda r: r["img_s"])
    return {**ranked[(len(ranked) - 1) // 2], "img_s_each": [r["img_s"] for r in runs]}  # type: ignore[dict-item]


def measure(args: argparse.Namespace) -> dict[str, object]:
    cv2.setNumThreads(1)
    models = args.models.split(",")
    work = Path(args.workdir)
    paths = make_collection(work / "images", args.n)
    flow_n = args.flow_n or args.n  # exactly this many files for the flows (hard links beyond n)
    source = linked_collection(work / f"set-{flow_n}", paths, flow_n)
    sample = paths[: min(len(paths), args.loop_sample)]
    res: dict[str, object] = {"n": len(paths), "models": models, "cpu_count": os.cpu_count(),
                              "loop_sample": len(sample), "flow_n": flow_n}
    if args.memory_only:  # worker memory at n vs big images only: the flows with args.workers
        return memory(res, paths, source, work, models, args)
    res["decode_only"] = isolated(decode_only, sample)
    res["plain_loop"] = isolated(plain_loop, sample, models)
    res["plain_loop_vs_decode_only"] = res["plain_loop"]["img_s"] / res["decode_only"]["img_s"]  # type: ignore[index]
    # 1 and N workers alternate --repeat times: on a shared VM the speed of a run drifts by 10-20%, so
    # each ratio compares neighbouring runs and the median of the ratios is reported.
    ones, manys = [], []
    for _ in range(args.repeat):
        ones.append(full_flow(source, work / "out", 1, models, args.shard_size, device=args.device))
        if args.workers > 1:
            manys.append(full_flow(source, work / "out", args.workers, models, args.shard_size, device=args.device))
    res["flow_1_worker"] = _median_run(ones)
    res["flow_1_vs_plain_loop"] = res["flow_1_worker"]["img_s"] / res["plain_loop"]["img_s"]  # type: ignore[index]
    if manys:
        res[f"flow_{args.workers}_workers"] = _median_run(manys)
        # end to end, and without start-up and orchestration: N workers' images per second while in shards
        for name, key, factor in (("scaling", "img_s", 1), ("scaling_in_shards", "images_per_shard_second",
                                                             args.workers)):
            ratios = [factor * m[key] / o[key] for o, m in zip(ones, manys, strict=True)]
            res[f"{name}_{args.workers}_vs_1_each"] = ratios
            res[f"{name}_{args.workers}_vs_1"] = float(np.median(ratios))
    if args.big:
        memory(res, paths, source, work, models, args,
               res.get(f"flow_{args.workers}_workers", res["flow_1_worker"]))  # type: ignore[arg-type]
    return res


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--n", type=int, default=5000, help="images in the collection")
    ap.add_argument("--big", type=int, default=0, help="also run the flow on this many images (memory)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--shard-size", type=int, default=500)
    ap.add_argument("--loop-sample", type=int, default=1000, help="images timed in the plain loops")
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS), help="default: the CLI's default set")
    ap.add_argument("--workdir", default="/tmp/iqaflow-bench")
    ap.add_argument("--flow-n", type=int, default=0, help="images for the 1- and N-worker flows (default: --n)")
    ap.add_argument("--repeat", type=int, default=1, help="alternate the 1- and N-worker flows this many times")
    ap.add_argument("--device", default="cpu", help="the flows' device: the CPU pipeline unless told (auto, cuda)")
    ap.add_argument("--memory-only", action="store_true", help="only the worker memory at --n vs --big images")


def _met(ok: bool) -> str:
    """Judged on the unrounded figure: 1.7999 prints as 1.80 at two decimals."""
    return "met" if ok else "not met"


def report(res: dict[str, object]) -> str:
    lines = [f"{res['n']} JPEGs 1024x768, scorers {','.join(res['models'])}, {res['cpu_count']} CPUs"]  # type: ignore[arg-type]
    if "decode_only" in res:  # not in --memory-only runs
        lines += [f"  decode-only loop        {res['decode_only']['img_s']:8.1f} img/s  "  # type: ignore[index]
                  f"peak RSS {res['decode_only']['peak_rss_mb']:.0f} MB",  # type: ignore[index]
                  f"  plain loop              {res['plain_loop']['img_s']:8.1f} img/s  "  # type: ignore[index]
                  f"peak RSS {res['plain_loop']['peak_rss_mb']:.0f} MB, "  # type: ignore[index]
                  f"{res['plain_loop_vs_decode_only']:.2f} of decode-only"]
    for k, v in res.items():
        if k.startswith("flow_") and isinstance(v, dict):
            quarters = " ".join(f"{q:.0f}" for q in v.get("worker_peak_rss_mb_by_quarter", []))
            lines.append(f"  {k:<24}{v['img_s']:8.1f} img/s  {v['images']} images, worker peak RSS "
                         f"{v['worker_peak_rss_mb']:.0f} MB (by quarter of the run: {quarters}), "
                         f"flow process {v['flow_peak_rss_mb']:.0f} MB")
            if "outside_flow_s" in v:
                lines.append(f"  {'':<24}{v['wall_s']:8.1f} s wall: {v['outside_flow_s']:.1f} s outside the flow, "
                             f"{v['in_flow_outside_shards_s']:.1f} s in it outside shards")
    if "flow_1_vs_plain_loop" in res:
        ratio = res["flow_1_vs_plain_loop"]
        lines.append(f"  flow(1 worker) / plain loop = {ratio:.2f}   (goal >= 0.85: {_met(ratio >= 0.85)})")
    for k, v in res.items():
        if k.startswith("scaling_") and not k.endswith("_each"):
            each = " ".join(f"{r:.4f}" for r in res.get(f"{k}_each", []))  # type: ignore[attr-defined]
            pairs = f"; each pair of runs: {each}" if each else ""
            lines.append(f"  {k} = {v:.4f}   (goal >= 1.8: {_met(v >= 1.8)}){pairs}")
        if k.endswith("_rss_big_vs_n"):
            lines.append(f"  {k} = {v:.2f}   (goal: within 1.00 +- 0.10: {_met(abs(v - 1) <= 0.1)})")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_args(ap)
    ap.add_argument("--json", default="bench/results/pipeline.json")
    args = ap.parse_args()
    res = measure(args)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(res, indent=2))
    print(report(res))
    print(f"written to {args.json}")


if __name__ == "__main__":
    _ = np  # numpy before cv2's first use
    main()
