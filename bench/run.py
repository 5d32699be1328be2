"""iqaflow against what users would otherwise run, side by side in one run: one table, one JSON.

    python bench/run.py [--n 5000] [--big 50000] [--anchors /tmp/benchdeps] [--json bench/results/run.json]

On one generated collection of N 1024x768 JPEGs (bench/pipeline.py makes and caches it):
  (a) decode-only loop: the physical limit on this CPU            } bench/pipeline.py, each in a fresh
  (b) iqaflow's full flow, default CPU scorer set, 1 and 2 workers } single-threaded process, with its
  (c) the same scorers in a plain loop                             } peak RSS; (b) also at --big images
  (d) pyiqa's and piq's implementations of the metrics they share with iqaflow, on images of the
      collection (FR metrics against a blurred + noisy copy), via bench/scorers.py
  (e) cleanvision's issue checks (blur, dark/light, low information, odd size/aspect, near/exact
      duplicates) on the same folder, or its first --cleanvision-n images
pyiqa (PolyForm Noncommercial) and cleanvision are never dependencies: install them into a side folder,
`pip install --target /tmp/benchdeps --no-deps pyiqa cleanvision imagehash tabulate PyWavelets ...`, and
pass it as --anchors. Goals: (b) >= 0.85 x (c); (c) >= 0.5 x (a); shared classical metrics >= 20x
pyiqa; 2 workers >= 1.8x one; flat worker memory from N to --big.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402
import pipeline  # noqa: E402


def shared_metrics(paths: list[Path], anchors: str | None) -> list[dict[str, object]]:
    """images/s of iqaflow, piq and pyiqa on each metric they share, one thread, same images."""
    import cv2
    import scorers as sb
    import torch

    from iqaflow.evaluation import synth
    from iqaflow.models.colour import convert
    from iqaflow.models.registry import create_scorer, get_scorer_class
    from iqaflow.models.weights import WeightsStore, configure_store, get_store
    from iqaflow.tasks.decode import decode

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    sb._piq_fns()
    pyiqa = None
    if anchors:
        try:
            import pyiqa  # type: ignore[no-redef]
        except ImportError as exc:
            print(f"pyiqa not importable from {anchors}: {exc}", file=sys.stderr)
    store = Path("/tmp/iqaflow-bench-weights")  # speed does not depend on the parameters' values
    configure_store(str(store))
    for name in sb.SHARED:
        cls = get_scorer_class(name)
        if any(get_store().status(w) != "ready" for w in cls.info.weights):
            cls.make_test_weights(WeightsStore(str(store)), seed=0)
    refs = [decode(p.read_bytes()).pixels for p in paths]
    dists = [synth.noise(synth.blur(r, 1.0 + i % 3), 5.0 + 3 * (i % 4), seed=i) for i, r in enumerate(refs)]
    x, y = sb.to_tensor(dists), sb.to_tensor(refs)
    rows = []
    for name, (pyiqa_name, piq_fn) in sb.SHARED.items():
        scorer = create_scorer(name)
        a = [convert(d, scorer.info.colour) for d in dists]
        b = [convert(r, scorer.info.colour) for r in refs]
        fr = scorer.info.kind == "fr"
        row: dict[str, object] = {"metric": name, "kind": scorer.info.kind,
                                  "iqaflow": sb.rate((lambda s=scorer, a=a, b=b: s.score_pairs(a, b)) if fr else
                                                     (lambda s=scorer, a=a: s.score(a)), len(paths))}
        if piq_fn is not None:
            row["piq"] = sb.rate(lambda f=piq_fn: f(x, y), len(paths))
        if pyiqa is not None and not fr:
            row["pyiqa_note"] = "pyiqa downloads its NIQE/BRISQUE parameters: not run offline"
        elif pyiqa is not None:
            try:
                m = pyiqa.create_metric(pyiqa_name, device="cpu")
                row["pyiqa"] = sb.rate(lambda m=m: m(x, y), len(paths), repeat=1)
            except Exception as exc:
                row["pyiqa_note"] = f"{type(exc).__name__}: {str(exc)[:70]}"
        for other in ("piq", "pyiqa"):
            if other in row:
                row[f"x_{other}"] = row["iqaflow"] / row[other]  # type: ignore[operator]
        rows.append(row)
    return rows


def cleanvision_checks(paths: list[Path], work: Path) -> dict[str, object]:
    """cleanvision's default issue checks on a folder of ``paths`` (hard links), images/s and peak RSS."""
    folder = work / f"cleanvision-{len(paths)}"
    folder.mkdir(parents=True, exist_ok=True)
    for p in paths:
        if not (folder / p.name).exists():
            (folder / p.name).hardlink_to(p)
    return pipeline.isolated(_cleanvision_child, str(folder), len(paths))


def _cleanvision_child(folder: str, n: int) -> float:
    import contextlib
    import io

    from cleanvision import Imagelab

    lab = Imagelab(data_path=folder)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        lab.find_issues()
    return n / (time.perf_counter() - t0)


def table(res: dict[str, object]) -> str:
    lines = [*pipeline.report(res["pipeline"]).splitlines(), ""]  # type: ignore[arg-type]
    cl = res["classical_plain_loop"]
    decode = res["pipeline"]["decode_only"]["img_s"]  # type: ignore[index]
    lines.insert(3, f"  plain loop, {','.join(cl['models'])} {cl['img_s']:8.1f} img/s  "  # type: ignore[index]
                 f"peak RSS {cl['peak_rss_mb']:.0f} MB, {cl['img_s'] / decode:.2f} of decode-only")  # type: ignore[index]
    cv = res.get("cleanvision")
    if isinstance(cv, dict):
        ours = res["pipeline"]["plain_loop"]["img_s"]  # type: ignore[index]
        lines.append(f"  cleanvision find_issues {cv['img_s']:8.1f} img/s  peak RSS {cv['peak_rss_mb']:.0f} MB, "
                     f"{cv['images']} images; iqaflow's plain loop is {ours / cv['img_s']:.2f}x")
        lines.append("")
    lines.append(f"{'shared metric':<14}{'kind':>5}{'iqaflow':>10}{'piq':>10}{'x piq':>8}{'pyiqa':>10}{'x pyiqa':>9}")
    for r in res.get("shared", []):  # type: ignore[union-attr]
        def g(k: str, fmt: str = "{:.1f}", r: dict = r) -> str:
            return fmt.format(r[k]) if k in r else "-"
        lines.append(f"{r['metric']:<14}{r['kind']:>5}{g('iqaflow'):>10}{g('piq'):>10}{g('x_piq', '{:.2f}'):>8}"
                     f"{g('pyiqa'):>10}{g('x_pyiqa', '{:.1f}'):>9}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    pipeline.add_args(ap)
    ap.add_argument("--anchors", default=None, help="side folder with pyiqa and cleanvision installed")
    ap.add_argument("--shared-n", type=int, default=16, help="images for the shared-metric comparison")
    ap.add_argument("--cleanvision-n", type=int, default=0, help="images for cleanvision [default: all N]")
    ap.add_argument("--json", default="bench/results/run.json")
    args = ap.parse_args()
    if args.anchors:
        sys.path.append(args.anchors)  # after the venv: the side folder never shadows iqaflow's packages
    res: dict[str, object] = {"command": " ".join(sys.argv)}
    res["pipeline"] = pipeline.measure(args)
    paths = pipeline.make_collection(Path(args.workdir) / "images", args.n)
    # The default set before the learned iqaflow_nr joined it: how far classical scorers alone get.
    classical = ["sharpness", "exposure", "noise"]
    res["classical_plain_loop"] = {"models": classical, **pipeline.isolated(
        pipeline.plain_loop, paths[: args.loop_sample], classical)}
    res["shared"] = shared_metrics(paths[: args.shared_n], args.anchors)
    try:
        import cleanvision  # noqa: F401

        sample = paths[: args.cleanvision_n or len(paths)]
        res["cleanvision"] = {**cleanvision_checks(sample, Path(args.workdir)), "images": len(sample)}
    except ImportError:
        res["cleanvision"] = "not installed: pass --anchors with cleanvision in it"
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(res, indent=2))
    print(table(res))
    print(f"written to {args.json}")


if __name__ == "__main__":
    _ = np
    main()
