"""``iqaflow score`` and ``iqaflow demo``: preflight, then the scoring flow with a live bar and the gate report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from iqaflow.cli.common import console, print_summary, quiet_prefect, with_progress

SCORE_EXAMPLES = """
Examples:

  iqaflow score ./photos --out ./qa

  iqaflow score s3://bucket/scans/ --out s3://bucket/qa/ --models sharpness,noise

  iqaflow score ./photos --config run.yaml --workers 4 --shard-size 2000

  iqaflow score ./photos --dask-address tcp://10.0.0.5:8786

  iqaflow score ./scans --reference-root ./masters --models psnr,ssim,sharpness
"""



def score(
    source: Annotated[str, typer.Argument(help="Folder, fsspec URL (s3://...) or manifest .csv/.parquet")],
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Run config YAML")] = None,
    out: Annotated[str | None, typer.Option(help="Output folder or URL [default: iqaflow-out]")] = None,
    models: Annotated[str | None, typer.Option(help="Comma-separated scorer names")] = None,
    workers: Annotated[int | None, typer.Option(help="Local Dask worker processes [default: 2]")] = None,
    shard_size: Annotated[int | None, typer.Option(help="Images per shard [default: 1000]")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per scorer batch [default: 32]")] = None,
    dask_address: Annotated[str | None, typer.Option(help="Existing Dask scheduler, tcp://host:8786")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda [default: auto]")] = None,
    run_id: Annotated[str | None, typer.Option(help="Run id; re-running the same id resumes")] = None,
    reference_root: Annotated[
        str | None, typer.Option(help="Folder or URL of reference images for FR models (same relative paths)")
    ] = None,
    gates: Annotated[str | None, typer.Option(help="Gate file (YAML): decide, check and route after scoring")] = None,
    apply: Annotated[bool, typer.Option("--apply", help="Carry out the gate file's routing (default: dry run)")] = (
        False
    ),
    tracking_uri: Annotated[
        str | None, typer.Option(help="MLflow tracking URI (and registry of mlflow: models) [default: OUT/mlflow.db]")
    ] = None,
    incremental: Annotated[
        str | None, typer.Option(help="Earlier run folder (OUT/runs/RUN_ID): score only new or changed images")
    ] = None,
    weights: Annotated[str | None, typer.Option(help="Weights store [default: $IQAFLOW_WEIGHTS]")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect and Dask logs")] = False,
) -> None:
    """Score every image under SOURCE and write Parquet results.

    Before anything starts, a preflight check finds what the run cannot do (weights, source, output,
    gate file, references) and stops with one line and exit code 2.
    """
    quiet_prefect(verbose)
    from iqaflow.config.run import load_config

    overrides = {
        "source": source, "out": out, "workers": workers, "shard_size": shard_size, "batch_size": batch_size,
        "dask_address": dask_address, "device": device, "run_id": run_id, "reference_root": reference_root,
        "models": [m for m in models.split(",")] if models else None, "gates": gates, "apply_routing": apply or None,
        "mlflow_tracking_uri": tracking_uri, "incremental": incremental, "weights": weights,
    }
    cfg = load_config(config, overrides)
    from iqaflow.cli.preflight import preflight

    preflight(cfg)  # before any Prefect server or Dask worker: one line and exit 2 for what cannot work
    from iqaflow.cli.gates import gate_report_after
    from iqaflow.flows.score import run_score

    with gate_report_after(cfg):
        print_summary(with_progress(run_score, cfg))


DEMO_GATES = Path(__file__).resolve().parents[2] / "examples" / "demo.yaml"


def demo(
    out: Annotated[Path, typer.Option(help="Folder for the sample collection and results")] = Path("demo-output"),
    bases: Annotated[int, typer.Option(help="Clean base images; each gets 13 distorted versions")] = 12,
    workers: Annotated[int, typer.Option(help="Local Dask worker processes")] = 2,
    gates: Annotated[str | None, typer.Option(help="Gate file [default: examples/demo.yaml of the checkout]")] = None,
) -> None:
    """Build a sample collection with known distortions (plus broken files), score and gate it."""
    quiet_prefect(False)
    from iqaflow.config.run import build_config

    gate_file = gates or (str(DEMO_GATES) if DEMO_GATES.is_file() else None)
    images = (out / "images").resolve()
    cfg = build_config(
        {"source": str(images), "out": str((out / "results").resolve()), "workers": workers,
         "shard_size": 64, "run_id": "demo", "gates": gate_file},
        "demo",
    )
    from iqaflow.evaluation.synth import make_collection

    make_collection(images, n_bases=bases)
    console.print(f"sample collection: {images} (truth in {images / 'labels.csv'})")
    if gate_file is None:
        console.print("[dim]no gate file (examples/demo.yaml is not beside this install): the run is ungated; "
                      "pass --gates FILE[/dim]")
    from iqaflow.cli.preflight import preflight

    preflight(cfg)
    from iqaflow.cli.gates import gate_report_after
    from iqaflow.flows.score import run_score

    with gate_report_after(cfg):
        print_summary(with_progress(run_score, cfg))




def register(app: typer.Typer) -> None:
    app.command(epilog=SCORE_EXAMPLES)(score)
    app.command(epilog="Example:\n\n  iqaflow demo --out demo-output")(demo)
