"""Shared by every command group: the consoles, Prefect/Dask log levels, the live progress bar, the run summary."""

from __future__ import annotations

import logging
import os

from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)
ENV_DEBUG = "IQAFLOW_DEBUG"


def quiet_prefect(verbose: bool) -> None:
    # Prefect reads its settings at import; keep its per-task console lines out of the CLI output.
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO" if verbose else "WARNING")
    # The API server would try to send usage telemetry: there may be no network, and it is not ours to send.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if verbose:
        os.environ["IQAFLOW_VERBOSE"] = "1"
    logging.getLogger("distributed").setLevel(logging.INFO if verbose else logging.ERROR)


def with_progress(run, cfg):  # noqa: ANN001, ANN202 - run_score and RunConfig, imported lazily
    """Run a scoring flow with a live bar: images done, images/s, errors, shards."""
    from iqaflow.flows.progress import RichProgress, set_reporter

    if not os.environ.get("IQAFLOW_VERBOSE"):  # Prefect's logging setup re-enables distributed's INFO lines
        logging.getLogger("distributed").setLevel(logging.ERROR)
    set_reporter(RichProgress())
    try:
        return run(cfg)
    finally:
        set_reporter(None)


def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def print_summary(summary) -> None:  # noqa: ANN001 - RunSummary, imported lazily
    table = Table(title=f"iqaflow run {summary.run_id}", show_lines=False)
    for col in ("column", "count", "mean", "p05", "median", "p95"):
        table.add_column(col, justify="right" if col != "column" else "left")
    for name, st in summary.scores.items():
        table.add_row(name, str(st.count), fmt(st.mean), fmt(st.p05), fmt(st.p50), fmt(st.p95))
    console.print(table)
    console.print(
        f"images: {summary.images}  ok: {summary.ok}  errors: {summary.errors}  "
        f"shards: {summary.shards} ({summary.shards_skipped} already done)  "
        f"time: {summary.seconds:.1f}s ({summary.images_per_second:.1f} images/s)"
    )
    if summary.errors_by_code:
        console.print("errors by code: " + ", ".join(f"{k}={v}" for k, v in summary.errors_by_code.items()))
    console.print(f"[bold]results:[/bold] {summary.results_dir}")
    run_root = summary.results_dir.rstrip("/").removesuffix("/results")
    console.print(f"[bold]report:[/bold] {run_root}/report.html")




def traceback_if_debug() -> None:
    if os.environ.get(ENV_DEBUG, "").lower() in ("1", "true", "yes"):
        import traceback

        traceback.print_exc()
