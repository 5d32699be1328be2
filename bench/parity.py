"""One parity table: every metric iqaflow shares with its authors' published values, beside pyiqa's.

    python bench/parity.py [--official ../shared/official] [--weights STORE] [--json bench/results/parity.json]

Without ``--weights`` a temporary store is made and the reference folder's unshippable published
weights (Kang's ``CNNIQA-LIVE``) are added to it, as ``iqaflow weights add`` would. Metrics whose
weights are still missing (LPIPS and DISTS need torchvision's ImageNet backbones) are listed as not
run, with the file they need. Exit code 1 if a metric that ran is outside its tolerance (beyond the known
gaps that ``iqaflow.tasks.learn.parity.KNOWN_GAPS`` states with their reasons).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from iqaflow.models.deep.zoo import KANG_WEIGHTS
from iqaflow.models.weights import configure_store
from iqaflow.tasks.learn.parity import ParityRow, parity_table

DEFAULT_OFFICIAL = Path(__file__).resolve().parents[2] / "shared" / "official"


def _values(v: object) -> str:
    return "-" if v is None else " ".join(f"{x:.4g}" for x in v)  # type: ignore[attr-defined]


def _diff(v: float | None) -> str:
    return "-" if v is None else f"{v:.2g}"


def show(rows: list[ParityRow], console: Console) -> None:
    table = Table(title="Parity with the authors' published values (TID2013 pairs; Kang: its demo's 11 images)")
    for col in ("metric", "iqaflow scorer", "official", "iqaflow", "max |diff|", "pyiqa max |diff|", "tolerance",
                "result"):
        table.add_column(col, overflow="fold")
    for r in rows:
        result = {True: "pass", False: "FAIL", None: "not run"}[r.passed] if r.comparable else "not comparable"
        if r.gaps and r.within_known_gaps:
            result = f"known gap ({len(r.gaps)}/{len(r.images)})"
        tol = f"{r.tolerance.min():.2g}" if r.tolerance.min() == r.tolerance.max() else \
            f"{r.tolerance.min():.2g}-{r.tolerance.max():.2g}"
        table.add_row(r.metric, r.scorer, _values(r.official), _values(r.ours), _diff(r.max_diff),
                      _diff(r.pyiqa_max_diff), tol, result)
    console.print(table)
    for r in rows:
        if r.note:
            console.print(f"{r.metric}: {r.note}", soft_wrap=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official", type=Path, default=DEFAULT_OFFICIAL)
    ap.add_argument("--weights", help="weights store to use as it is [default: a temporary one]")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = configure_store(args.weights or tmp)
        kang = args.official / "cnniqa" / KANG_WEIGHTS
        if args.weights is None and kang.is_file():
            store.put_bytes(KANG_WEIGHTS, kang.read_bytes())
        rows = parity_table(args.official)
    show(rows, Console(width=160))
    if args.json:
        args.json.write_text(json.dumps([{
            "metric": r.metric, "scorer": r.scorer, "images": r.images, "official": r.official.tolist(),
            "iqaflow": None if r.ours is None else r.ours.tolist(), "max_diff": r.max_diff,
            "pyiqa_max_diff": r.pyiqa_max_diff, "tolerance": r.tolerance.tolist(), "passed": r.passed,
            "note": r.note,
        } for r in rows], indent=1))
    return 1 if any(r.passed is False and not (r.gaps and r.within_known_gaps) for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
