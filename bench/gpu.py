"""GPU path: a deep NR scorer's images/s through iqaflow's shard loop vs its forward pass alone.

    python bench/gpu.py --model kang --n 1024 --size 512 [--json bench/gpu.json]

(a) forward only: the network on pre-decoded, pre-processed tensors already on the GPU
(b) shard loop: ``score_members`` as each Dask worker runs it per shard (read-ahead, decode,
    batching, AMP inference) with default settings: on CUDA the tensor path (iqaflow.tasks.
    decode_gpu: batched nvJPEG decode straight to device tensors, TorchScorer.score_tensors)
(c) nvJPEG batched decode alone, against Pillow decode on one thread
(d) the shard loop on the CPU decode path (gpu_decode=False: Pillow in a thread pool, numpy ->
    tensor copies), i.e. what (b) measured before the tensor path; (b)/(d) is its gain
(e) the full flow (Prefect + Dask, one worker per GPU) on --flow-n hard links of the same files;
    its wall time includes starting Prefect's API and the cluster (tens of seconds)
(f) pyiqa's inference loop for the same architecture (``metric(path)`` per file), with --pyiqa-path
Goal: (b)/(a) and (e)/(a) >= 0.8, i.e. loading is not the bottleneck. One command on a GPU machine:
    python bench/gpu.py --model kang --pyiqa-path /tmp/benchdeps
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def make_jpegs(folder: Path, n: int, size: int) -> list[str]:
    import cv2

    from iqaflow.evaluation import synth

    folder.mkdir(parents=True, exist_ok=True)
    crops = synth.random_crops(synth.skimage_images(), 32, 10_000, seed=0)
    bases = [cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA) for _, img in crops]
    paths = []
    for i in range(n):
        p = folder / f"{i:05d}.jpg"
        if not p.exists():
            p.write_bytes(synth.jpeg_bytes(bases[i % len(bases)], 90))
        paths.append(str(p))
    return paths


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def full_flow_row(args: argparse.Namespace, paths: list[str], store: str) -> dict | None:
    """(e) the whole flow (Prefect + Dask, one worker per GPU) on --flow-n hard links of the same files."""
    if not args.flow_n:
        return None
    sys.path.insert(0, str(Path(__file__).parent))
    import pipeline

    folder = pipeline.linked_collection(Path(args.workdir) / f"flow-{args.flow_n}", [Path(p) for p in paths],
                                        args.flow_n)
    return pipeline.full_flow(folder, Path(args.workdir) / "flow-out", None, [args.model], 5000,
                              device="auto", weights=store, batch_size=args.batch)


# pyiqa's name for the same architecture. Its DBCNN and HyperIQA build ImageNet backbones that they download
# when constructed, so offline only CNNIQA (Kang et al.'s network) can run.
PYIQA_SAME_ARCH = {"kang": ("cnniqa", {"pretrained": None})}


def pyiqa_loop(args: argparse.Namespace, paths: list[str], device: str) -> float | None:
    """(f) pyiqa's inference loop for the same architecture: ``metric(path)`` per file, random weights."""
    if not args.pyiqa_path or args.model not in PYIQA_SAME_ARCH:
        return None
    sys.path.append(args.pyiqa_path)
    import pyiqa

    name, kwargs = PYIQA_SAME_ARCH[args.model]
    metric = pyiqa.create_metric(name, device=device, **kwargs)
    n = min(len(paths), 256)
    metric(paths[0])
    sync()
    t0 = time.perf_counter()
    for p in paths[:n]:
        metric(p)
    sync()
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="kang")
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--window", type=int, default=32, help="read-ahead per shard")
    ap.add_argument("--workdir", default="/tmp/iqaflow-gpu-bench")
    ap.add_argument("--json", default="bench/gpu.json")
    ap.add_argument("--flow-n", type=int, default=20000, help="images for (e) the full flow (hard links); 0: skip")
    ap.add_argument("--profile", default=None, help="write a cProfile of the shard loop (b) to this file")
    ap.add_argument("--pyiqa-path", default=None, help="side folder with pyiqa installed, for (f)")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"

    from iqaflow.models.colour import convert
    from iqaflow.models.registry import get_scorer_class
    from iqaflow.models.weights import configure_store, get_store
    from iqaflow.tasks.decode import decode
    from iqaflow.tasks.score.gpu import TensorPath
    from iqaflow.tasks.score.shard import score_members

    paths = make_jpegs(Path(args.workdir), args.n, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        configure_store(tmp)
        cls = get_scorer_class(args.model)
        cls.make_test_weights(get_store(), seed=0)
        scorer = cls()
        scorer.setup(device)

        # (a) forward only, on tensors prepared exactly as the scorer prepares them.
        imgs = [convert(decode(Path(p).read_bytes()).pixels, cls.info.colour) for p in paths[: args.batch]]
        with torch.inference_mode():
            prepared = torch.cat([scorer.prepare(scorer._tensor(i)) for i in imgs]).to(device)
        per_image = prepared.shape[0] // len(imgs)
        scorer._forward(prepared)  # warm-up
        sync()
        reps = max(1, args.n // args.batch)
        t0 = time.perf_counter()
        for _ in range(reps):
            scorer._forward(prepared)
        sync()
        forward_img_s = reps * len(imgs) / (time.perf_counter() - t0)

        def shard_loop(gpu_decode: bool | str) -> float:
            score_members(paths[: args.batch], [None] * args.batch, [scorer], "warm", args.batch, args.window,
                          gpu_decode=gpu_decode)
            sync()
            t0 = time.perf_counter()
            table = score_members(paths, [None] * len(paths), [scorer], "bench", args.batch, args.window,
                                  gpu_decode=gpu_decode)
            sync()
            assert table.num_rows == len(paths) and table["status"].to_pylist().count("ok") == len(paths)
            return len(paths) / (time.perf_counter() - t0)

        # (b) the shard loop on files, default settings; (d) the same on the CPU decode path.
        tensor_path = TensorPath.for_shard("auto", [scorer]) is not None
        shard_img_s = shard_loop("auto")
        if args.profile:  # where (b)'s time goes, for the next step: one more run under cProfile
            import cProfile
            import io
            import pstats

            prof = cProfile.Profile()
            prof.runcall(shard_loop, "auto")
            text = io.StringIO()
            pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(30)
            Path(args.profile).write_text(text.getvalue())
        cpu_decode_loop_img_s = shard_loop(False)

        # (c) nvjpeg batched decode alone, for reference against PIL decode.
        gpu_decode_img_s = None
        if device == "cuda":
            from torchvision.io import decode_jpeg

            datas = [torch.frombuffer(bytearray(Path(p).read_bytes()), dtype=torch.uint8) for p in paths]
            decode_jpeg(datas[: args.batch], device="cuda")
            sync()
            t0 = time.perf_counter()
            for i in range(0, len(datas), args.batch):
                decode_jpeg(datas[i : i + args.batch], device="cuda")
            sync()
            gpu_decode_img_s = len(datas) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for p in paths[:256]:
            decode(Path(p).read_bytes())
        cpu_decode_img_s = min(256, len(paths)) / (time.perf_counter() - t0)

        flow = full_flow_row(args, paths, tmp)
    pyiqa_img_s = pyiqa_loop(args, paths, device)

    row = {
        "model": args.model, "device": device, "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
        "torch": torch.__version__, "n": len(paths), "size": args.size, "batch": args.batch,
        "patches_per_image": per_image, "forward_only_img_s": forward_img_s, "shard_loop_img_s": shard_img_s,
        "shard_vs_forward": shard_img_s / forward_img_s, "shard_loop_tensor_path": tensor_path,
        "cpu_decode_shard_loop_img_s": cpu_decode_loop_img_s,
        "cpu_decode_shard_vs_forward": cpu_decode_loop_img_s / forward_img_s,
        "tensor_path_gain": shard_img_s / cpu_decode_loop_img_s,
        "cpu_decode_img_s_1thread": cpu_decode_img_s, "gpu_nvjpeg_decode_img_s": gpu_decode_img_s,
        "full_flow": flow, "flow_vs_forward": flow["img_s"] / forward_img_s if flow else None,
        "pyiqa_loop_img_s": pyiqa_img_s, "shard_loop_vs_pyiqa": shard_img_s / pyiqa_img_s if pyiqa_img_s else None,
    }
    Path(args.json).write_text(json.dumps(row, indent=2))
    print(json.dumps(row, indent=2))


if __name__ == "__main__":
    _ = np
    main()
