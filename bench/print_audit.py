"""Print-audit benchmark: simulated jobs registered with ``align`` (``--align``, tiles by default) and inspected.

For each dpi (150 and 300 by default) a job of ``--pages`` pages (page seeds 0..N-1; half clean, the rest
with one defect each, types cycling through the catalogue of ``iqaflow.evaluation.print_sim``, sizes and
strengths drawn within each type's grades) is simulated, each scan registered to its master and inspected
(``iqaflow.models.printing.defects.inspect``). Thresholds were tuned on page seeds 1000 and up (``--seed
1000``); the figures this script reports by default come from seeds 0..N-1, which tuning never saw.

Reported:
* recall per defect type and grade: a local defect is found when a reported defect of any type overlaps its
  box grown by ``MATCH_MM``; page-wide types by their page-level evidence (colour_shift: ``delta_e_p95`` or a
  colour_shift region at/above ``print_colour.DE_FLAG``; misregistration, wrong_page, missing_page: a
  defect of that type, wrong and missing page counting for each other). ``typed`` is the share of found
  defects whose best-overlapping report has the right type.
* false alarms: reported defects per 100 clean pages, and clean pages with any defect.
* registration: pages with a master (not wrong/missing) that ``align`` registered, and those within 2 px
  of the true homography (corner error, master px).
* seconds per page (align + inspect, one thread: cv2.setNumThreads(1), OMP/MKL threads 1), median and p95,
  as wall time and as the process's CPU time (the figure that stays honest when other work shares the cores).

Run: ``python bench/print_audit.py [--pages N] [--dpi 150 300] [--seed S] [--align tiles|ecc]``; writes
``bench/results/print_audit.json`` (``--out`` to change). Held-out runs on record: seeds 0..199 (``--pages
200``, ``print_audit.json``) and seeds 200..499 (``--pages 300 --seed 200 --out
bench/results/print_audit_200.json``, first run after the blurred-text model of ``models/printing/sharpness.py``)
and seeds 500..699 (``--pages 200 --seed 500 --dpi 150`` and ``--dpi 300``, joined into
``print_audit_500.json``; first run after the band confirmation of ``bands.band_contrast``).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from iqaflow.evaluation.print_sim import SimPage, simulate_job  # noqa: E402
from iqaflow.models.printing import delta_e as print_colour  # noqa: E402
from iqaflow.models.printing.defects import Inspection, inspect, unregistered  # noqa: E402
from iqaflow.models.printing.registration import (  # noqa: E402
    Method,
    RegistrationError,
    align,
    corner_error,
    overlap_box,
)

MATCH_MM = 1.0
PAGE_TYPES = ("colour_shift", "misregistration", "wrong_page", "missing_page")


def _hit(a: tuple[int, int, int, int], b: tuple[int, int, int, int], pad: float) -> bool:
    return (a[0] < b[0] + b[2] + pad and b[0] - pad < a[0] + a[2] and a[1] < b[1] + b[3] + pad
            and b[1] - pad < a[1] + a[3])


def run_page(page: SimPage, dpi: int, method: Method) -> tuple[Inspection, dict[str, float | bool]]:
    t0, c0 = time.perf_counter(), time.process_time()
    info: dict[str, float | bool] = {"registered": True}
    try:
        got, ref, reg, _ = align(page.scan, page.master, method)
        x0, y0, _, _ = overlap_box(reg.homography, page.scan.shape, page.master.shape)
        result = inspect(got, ref, dpi, (x0, y0))
        info["corner_error"] = corner_error(reg.homography, page.truth.homography, page.master.shape)
    except (RegistrationError, np.linalg.LinAlgError, cv2.error):  # a degenerate homography fails too
        info["registered"] = False
        result = unregistered(page.scan, page.master, dpi)  # classifies the failure (wrong / missing page)
    info["seconds"] = time.perf_counter() - t0
    info["cpu_seconds"] = time.process_time() - c0
    return result, info


def score_page(page: SimPage, result: Inspection, dpi: int) -> list[dict[str, object]]:
    rows = []
    pad = MATCH_MM * dpi / 25.4
    for t in page.truth.defects:
        kind = "periodic_band" if t.params.get("periodic") else t.type
        if t.type == "colour_shift":
            regions = [d for d in result.defects if d.type == "colour_shift" and _hit(d.box, t.bbox, pad)]
            whole = t.bbox[2] * t.bbox[3] >= 0.9 * page.master.shape[0] * page.master.shape[1]
            found = bool(regions) or (whole and result.delta_e_p95 >= print_colour.DE_FLAG)
            typed = found
        elif t.type in ("misregistration", "wrong_page", "missing_page"):
            want = {"misregistration"} if t.type == "misregistration" else {"wrong_page", "missing_page"}
            hits = [d for d in result.defects if d.type in want]
            found = bool(hits)
            typed = any(d.type == t.type for d in hits)
        else:
            hits = [d for d in result.defects if _hit(d.box, t.bbox, pad)]
            found = bool(hits)
            typed = any(d.type == t.type for d in hits)
        rows.append({"type": kind, "grade": t.grade, "found": found, "typed": typed,
                     "strength": t.strength, "area_mm2": t.area_mm2})
    return rows


def run(dpi: int, pages: int, seed: int, method: Method = "tiles") -> dict[str, object]:
    cv2.setNumThreads(1)
    rows: list[dict[str, object]] = []
    clean_defects: list[int] = []
    clean_types: dict[str, int] = defaultdict(int)
    reg_ok, reg_close, reg_n = 0, 0, 0
    seconds: list[float] = []
    cpu: list[float] = []
    for page in simulate_job(pages, dpi, seed=seed):
        result, info = run_page(page, dpi, method)
        seconds.append(float(info["seconds"]))
        cpu.append(float(info["cpu_seconds"]))
        kinds = {t.type for t in page.truth.defects}
        if not kinds & {"wrong_page", "missing_page"}:
            reg_n += 1
            reg_ok += bool(info["registered"])
            reg_close += bool(info["registered"]) and float(info.get("corner_error", 99.0)) < 2.0
        if not page.truth.defects:
            clean_defects.append(result.defect_count)
            for d in result.defects:
                clean_types[d.type] += 1
        rows += score_page(page, result, dpi)
    table: dict[str, dict[str, object]] = {}
    for r in rows:
        key = f"{r['type']} {r['grade']}"
        e = table.setdefault(key, {"n": 0, "found": 0, "typed": 0})
        e["n"] = int(e["n"]) + 1  # type: ignore[call-overload]
        e["found"] = int(e["found"]) + bool(r["found"])  # type: ignore[call-overload]
        e["typed"] = int(e["typed"]) + bool(r["typed"])  # type: ignore[call-overload]
    for e in table.values():
        e["recall"] = int(e["found"]) / int(e["n"])  # type: ignore[call-overload]
    n_clean = len(clean_defects)
    return {
        "dpi": dpi, "pages": pages, "seed": seed, "align": method, "recall": dict(sorted(table.items())),
        "clean_pages": n_clean,
        "false_alarms_per_100_clean": 100.0 * sum(clean_defects) / max(1, n_clean),
        "clean_pages_flagged_per_100": 100.0 * sum(c > 0 for c in clean_defects) / max(1, n_clean),
        "false_alarm_types": dict(clean_types),
        "registration": {"pages": reg_n, "registered": reg_ok, "within_2px": reg_close},
        "seconds_per_page": {"median": float(np.median(seconds)), "p95": float(np.percentile(seconds, 95))},
        "cpu_seconds_per_page": {"median": float(np.median(cpu)), "p95": float(np.percentile(cpu, 95))},
        "rows": rows,
    }


def print_report(res: dict[str, object]) -> None:
    last = int(res["seed"]) + int(res["pages"]) - 1  # type: ignore[call-overload]
    print(f"\n== {res['dpi']} dpi, {res['pages']} pages (seeds {res['seed']}..{last}), align {res['align']}")
    print(f"{'type / grade':32s} {'n':>4s} {'recall':>7s} {'typed':>6s}")
    for key, e in res["recall"].items():  # type: ignore[union-attr]
        typed = e["typed"] / max(1, e["found"])
        print(f"{key:32s} {e['n']:4d} {e['recall']:7.2f} {typed:6.2f}")
    reg = res["registration"]
    sec = res["seconds_per_page"]
    print(f"false alarms per 100 clean pages: {res['false_alarms_per_100_clean']:.1f} "
          f"(pages flagged {res['clean_pages_flagged_per_100']:.1f} of 100; {res['clean_pages']} clean pages; "
          f"types {res['false_alarm_types']})")
    print(f"registration: {reg['registered']}/{reg['pages']} registered, {reg['within_2px']} within 2 px")  # type: ignore[index]
    cpu = res["cpu_seconds_per_page"]
    print(f"seconds per page (align + inspect, 1 thread): wall median {sec['median']:.2f}, p95 {sec['p95']:.2f}; "  # type: ignore[index]
          f"CPU median {cpu['median']:.2f}, p95 {cpu['p95']:.2f}")  # type: ignore[index]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pages", type=int, default=200)
    ap.add_argument("--dpi", type=int, nargs="+", default=[150, 300])
    ap.add_argument("--seed", type=int, default=0, help="first page seed (tuning used 1000+)")
    ap.add_argument("--align", choices=["tiles", "ecc"], default="tiles", help="sub-pixel registration")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "print_audit.json")
    args = ap.parse_args()
    results = []
    for dpi in args.dpi:
        res = run(dpi, args.pages, args.seed, args.align)
        print_report(res)
        results.append(res)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, default=float))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
