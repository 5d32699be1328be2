"""The ``iqaflow`` command line (Typer). Heavy imports happen inside commands so --help is instant."""

from __future__ import annotations

import atexit
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from iqaflow.errors import IqaflowError
from iqaflow.preflight import one_line, weights_readiness

if TYPE_CHECKING:
    from iqaflow.models.base import Scorer, WeightSpec
    from iqaflow.models.weights import WeightsStore

app = typer.Typer(
    name="iqaflow",
    help="Image-quality QA for large image collections: score, gate, route, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)
ENV_DEBUG = "IQAFLOW_DEBUG"


@app.callback()
def _top(
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an expected error too")] = False,
) -> None:
    # Expected errors are one line on stderr; --debug (or $IQAFLOW_DEBUG=1) adds their traceback.
    if debug:
        os.environ[ENV_DEBUG] = "1"

SCORE_EXAMPLES = """
Examples:

  iqaflow score ./photos --out ./qa

  iqaflow score s3://bucket/scans/ --out s3://bucket/qa/ --models sharpness,noise

  iqaflow score ./photos --config run.yaml --workers 4 --shard-size 2000

  iqaflow score ./photos --dask-address tcp://10.0.0.5:8786

  iqaflow score ./scans --reference-root ./masters --models psnr,ssim,sharpness
"""


def _quiet_prefect(verbose: bool) -> None:
    # Prefect reads its settings at import; keep its per-task console lines out of the CLI output.
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO" if verbose else "WARNING")
    # The API server would try to send usage telemetry: there may be no network, and it is not ours to send.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if verbose:
        os.environ["IQAFLOW_VERBOSE"] = "1"
    logging.getLogger("distributed").setLevel(logging.INFO if verbose else logging.ERROR)


def _with_progress(run, cfg):  # noqa: ANN001, ANN202 - run_score and RunConfig, imported lazily
    """Run a scoring flow with a live bar: images done, images/s, errors, shards."""
    from iqaflow.flows.progress import RichProgress, set_reporter

    if not os.environ.get("IQAFLOW_VERBOSE"):  # Prefect's logging setup re-enables distributed's INFO lines
        logging.getLogger("distributed").setLevel(logging.ERROR)
    set_reporter(RichProgress())
    try:
        return run(cfg)
    finally:
        set_reporter(None)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def _print_summary(summary) -> None:  # noqa: ANN001 - RunSummary, imported lazily
    table = Table(title=f"iqaflow run {summary.run_id}", show_lines=False)
    for col in ("column", "count", "mean", "p05", "median", "p95"):
        table.add_column(col, justify="right" if col != "column" else "left")
    for name, st in summary.scores.items():
        table.add_row(name, str(st.count), _fmt(st.mean), _fmt(st.p05), _fmt(st.p50), _fmt(st.p95))
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


@app.command(epilog=SCORE_EXAMPLES)
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
    _quiet_prefect(verbose)
    from iqaflow.config import load_config

    overrides = {
        "source": source, "out": out, "workers": workers, "shard_size": shard_size, "batch_size": batch_size,
        "dask_address": dask_address, "device": device, "run_id": run_id, "reference_root": reference_root,
        "models": [m for m in models.split(",")] if models else None, "gates": gates, "apply_routing": apply or None,
        "mlflow_tracking_uri": tracking_uri, "incremental": incremental, "weights": weights,
    }
    cfg = load_config(config, overrides)
    from iqaflow.preflight import preflight

    preflight(cfg)  # before any Prefect server or Dask worker: one line and exit 2 for what cannot work
    from iqaflow.cli_gates import gate_report_after
    from iqaflow.flows.score import run_score

    with gate_report_after(cfg):
        _print_summary(_with_progress(run_score, cfg))


@app.command(epilog="Examples:\n\n  iqaflow models\n\n  iqaflow models kang\n\n  iqaflow models --long\n\n"
             "  iqaflow models --weights s3://bucket/iqaflow-weights/")
def models(
    name: Annotated[str | None, typer.Argument(help="One scorer: everything about it")] = None,
    long: Annotated[bool, typer.Option("--long", help="Everything about every scorer")] = False,
    weights: Annotated[str | None, typer.Option(help="Weights store to check [default: $IQAFLOW_WEIGHTS]")] = None,
) -> None:
    """List registered scorers, one line each (name, NR/FR, better, ready); NAME or --long for the rest."""
    from iqaflow.models.registry import all_scorers, get_scorer_class
    from iqaflow.models.weights import WeightsStore

    store = WeightsStore.from_env(weights)
    states: dict[WeightSpec, str] = {}  # one check per file: several scorers share a backbone
    if name is not None or long:
        scorers = {name: get_scorer_class(name)} if name is not None else all_scorers()
        for scorer, cls in scorers.items():
            _model_details(scorer, cls, store, states)
        return
    table = Table(title=f"iqaflow scorers (weights: {store.root})", title_justify="left", box=None,
                  pad_edge=False)
    table.add_column("name", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("better", no_wrap=True)
    table.add_column("ready", no_wrap=True, overflow="ellipsis", max_width=48)
    for scorer, cls in all_scorers().items():
        info = cls.info
        table.add_row(scorer, info.kind.upper(), "higher" if info.higher_is_better else "lower",
                      _ready_short(cls, store, states))
    console.print(table)
    console.print("[dim]iqaflow models NAME: one scorer in full; --long: all of them[/dim]")


def _ready_short(cls: type[Scorer], store: WeightsStore, states: dict[WeightSpec, str]) -> str:
    """"yes", or the state and names of the files that are not ready (the hint is in the details)."""
    weights_readiness(cls, store, states)
    bad: dict[str, list[str]] = {}
    for spec in cls.info.weights:
        if states[spec] != "ready":
            bad.setdefault(states[spec], []).append(spec.filename)
    return "; ".join(f"{state}: {', '.join(files)}" for state, files in bad.items()) or "yes"


def _model_details(name: str, cls: type[Scorer], store: WeightsStore, states: dict[WeightSpec, str]) -> None:
    info = cls.info
    console.print(f"[bold]{name}[/bold]  {info.kind.upper()}, {'higher' if info.higher_is_better else 'lower'} "
                  f"is better, range {info.range_text()}, {info.colour} input, size policy {info.size_policy}")
    from rich.padding import Padding

    lines = [info.description, *(f"column {out}: {info.extra_descriptions.get(out, '')}" for out in info.extra_outputs),
             f"ready: {weights_readiness(cls, store, states)}"]
    for spec in info.weights:
        pin = f"sha256 {spec.sha256[:16]}... (pinned)" if spec.sha256 else "sha256 recorded by the store"
        lines.append(f"file {spec.filename}: {states[spec]}, {pin}")
    for line in lines:  # wrapped lines stay indented under the scorer's name
        console.print(Padding(line, (0, 0, 0, 2)), highlight=False)
    console.print()


weights_app = typer.Typer(help="Manage the offline weights store.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")


@weights_app.command("add", epilog="Example:\n\n  iqaflow weights add ./lpips_alex.pt --weights ./weights")
def weights_add(
    files: Annotated[list[Path], typer.Argument(help="Weight files to copy into the store")],
    weights: Annotated[str | None, typer.Option(help="Weights store [default: $IQAFLOW_WEIGHTS]")] = None,
) -> None:
    """Copy weight files into the store and record their sha256 in its manifest.

    A name that a scorer pins (a published file, e.g. torchvision's vgg16-397923af.pth) takes only those bytes.
    """
    import hashlib

    from iqaflow.errors import WeightsError
    from iqaflow.models.registry import all_scorers
    from iqaflow.models.weights import WeightsStore

    store = WeightsStore.from_env(weights)
    pins = {spec.filename: (spec.sha256, cls) for cls in all_scorers().values()
            for spec in cls.info.weights if spec.sha256}  # fmt: skip
    for f in files:
        if not f.is_file():
            raise WeightsError(f"{str(f)!r} is not a file. Fix: pass the path of a weights file")
        data = f.read_bytes()
        if f.name in pins and (got := hashlib.sha256(data).hexdigest()) != (pin := pins[f.name][0]):
            cls = pins[f.name][1]
            hint = getattr(cls, "weights_help", {}).get(f.name, "the file the scorer's description names")
            raise WeightsError(
                f"{str(f)!r} has sha256 {got}, but scorer {cls.info.name!r} pins {f.name!r} to the published "
                f"file, sha256 {pin}. Fix: {hint}, unmodified"
            )
        digest = store.put_bytes(f.name, data)
        console.print(f"{f.name}  sha256={digest}  -> {store.root}")


@weights_app.command(
    "convert-tflite",
    epilog="Example (how iqaflow/weights/mobilenet_v1_224.pt was made):\n\n  iqaflow weights convert-tflite "
    "../shared/official/mobilenet/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite mobilenet_v1_224.pt "
    "--weights iqaflow/weights",
)
def weights_convert_tflite(
    source: Annotated[Path, typer.Argument(help="Quantised TFLite image model (MobileNet v1/v2)")],
    name: Annotated[str, typer.Argument(help="File name in the store, e.g. mobilenet_v1_224.pt")],
    weights: Annotated[str | None, typer.Option(help="Weights store [default: $IQAFLOW_WEIGHTS]")] = None,
) -> None:
    """Convert a quantised TFLite model into a graph state iqaflow runs in float torch, and store it."""
    from iqaflow.errors import WeightsError
    from iqaflow.models.nets.tflite_read import read_tflite
    from iqaflow.models.weights import WeightsStore

    if not source.is_file():
        raise WeightsError(f"{str(source)!r} is not a file. Fix: pass the path of a .tflite file")
    store = WeightsStore.from_env(weights)
    digest = store.put_state_dict(name, read_tflite(source))
    console.print(f"{name}  sha256={digest}  -> {store.root}")


@app.command(
    epilog="Examples:\n\n  iqaflow fit niqe --pristine ./pristine   # then score with --models niqe_fitted\n\n"
    "  iqaflow fit brisque --pristine ./pristine --weights s3://bucket/iqaflow-weights/"
)
def fit(
    model: Annotated[str, typer.Argument(help="What to fit: niqe (pristine model) or brisque (regressor)")],
    pristine: Annotated[Path, typer.Option(help="Folder of pristine (undistorted) images")],
    weights: Annotated[str | None, typer.Option(help="Weights store [default: $IQAFLOW_WEIGHTS]")] = None,
) -> None:
    """Fit NIQE's or BRISQUE's parameters to your pristine images for the niqe_fitted / brisque_fitted scorers
    (niqe and brisque themselves use the published models shipped with iqaflow)."""
    from iqaflow.errors import ConfigError
    from iqaflow.models.nss_fit import FITTED_SCORER, FITTERS, read_images
    from iqaflow.models.registry import get_scorer_class
    from iqaflow.models.weights import WeightsStore

    if model not in FITTERS:
        raise ConfigError(f"cannot fit {model!r}: expected one of {', '.join(FITTERS)}")
    if not pristine.is_dir():
        raise ConfigError(f"--pristine {str(pristine)!r} is not a folder. Fix: pass a folder of pristine images")
    images = read_images(pristine)
    if not images:
        raise ConfigError(f"no images in {str(pristine)!r}. Fix: put PNG/JPEG/TIFF files directly in that folder")
    console.print(f"fitting {model} on {len(images)} pristine images from {pristine} ...")
    state = FITTERS[model](images)
    scorer = FITTED_SCORER[model]
    filename = get_scorer_class(scorer).info.weights[0].filename
    store = WeightsStore.from_env(weights)
    digest = store.put_state_dict(filename, state)
    detail = ", ".join(f"{k}={float(v):.4g}" for k, v in state.items() if v.ndim == 0 and k != "gamma")
    console.print(f"{filename}  sha256={digest}  -> {store.root}  ({detail}); score with --models {scorer}")


DEMO_GATES = Path(__file__).resolve().parent.parent / "examples" / "demo.yaml"


@app.command(epilog="Example:\n\n  iqaflow demo --out demo-output")
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the sample collection and results")] = Path("demo-output"),
    bases: Annotated[int, typer.Option(help="Clean base images; each gets 13 distorted versions")] = 12,
    workers: Annotated[int, typer.Option(help="Local Dask worker processes")] = 2,
    gates: Annotated[str | None, typer.Option(help="Gate file [default: examples/demo.yaml of the checkout]")] = None,
) -> None:
    """Build a sample collection with known distortions (plus broken files), score and gate it."""
    _quiet_prefect(False)
    from iqaflow.config import build_config

    gate_file = gates or (str(DEMO_GATES) if DEMO_GATES.is_file() else None)
    images = (out / "images").resolve()
    cfg = build_config(
        {"source": str(images), "out": str((out / "results").resolve()), "workers": workers,
         "shard_size": 64, "run_id": "demo", "gates": gate_file},
        "demo",
    )
    from iqaflow.synth import make_collection

    make_collection(images, n_bases=bases)
    console.print(f"sample collection: {images} (truth in {images / 'labels.csv'})")
    if gate_file is None:
        console.print("[dim]no gate file (examples/demo.yaml is not beside this install): the run is ungated; "
                      "pass --gates FILE[/dim]")
    from iqaflow.preflight import preflight

    preflight(cfg)
    from iqaflow.cli_gates import gate_report_after
    from iqaflow.flows.score import run_score

    with gate_report_after(cfg):
        _print_summary(_with_progress(run_score, cfg))


def _register_gate_commands() -> None:
    from iqaflow.cli_gates import register

    register(app, _quiet_prefect)


_register_gate_commands()


def _register_ml_commands() -> None:
    from iqaflow import cli_ml

    app.command(epilog=cli_ml.TRAIN_EXAMPLES)(cli_ml.train)
    app.command(epilog=cli_ml.EVALUATE_EXAMPLES)(cli_ml.evaluate)


_register_ml_commands()


def _register_default_nr_commands() -> None:
    from iqaflow import cli_default_nr as d

    app.command("train-default", epilog=d.TRAIN_DEFAULT_EXAMPLES)(d.train_default)
    app.command("evaluate-default", epilog=d.EVALUATE_DEFAULT_EXAMPLES)(d.evaluate_default)


_register_default_nr_commands()


def _register_ops_commands() -> None:
    from iqaflow.cli_ops import register

    register(app, _quiet_prefect)


_register_ops_commands()


def _traceback_if_debug() -> None:
    if os.environ.get(ENV_DEBUG, "").lower() in ("1", "true", "yes"):
        import traceback

        traceback.print_exc()


def main() -> None:
    """Entry point: one-line reason and non-zero exit on failure.

    Exits through ``os._exit`` after flushing, because s3fs/pyarrow background threads can
    abort the interpreter at shutdown ("terminate called ...") and turn success into 134.
    """
    code = 0
    if "--debug" in sys.argv[1:]:  # accepted anywhere on the line, not only before the command
        sys.argv = [a for a in sys.argv if a != "--debug"]
        os.environ[ENV_DEBUG] = "1"
    try:
        app(standalone_mode=False)
    except IqaflowError as exc:
        _traceback_if_debug()
        err_console.print(f"[red]error:[/red] {one_line(str(exc))}", highlight=False, soft_wrap=True)
        code = 2
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        code = 130
    except Exception as exc:  # click usage errors and anything unexpected: one line, non-zero
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            code = exc.exit_code
        elif isinstance(exc, click.exceptions.Abort):
            code = 1
        else:
            _traceback_if_debug()
            err_console.print(f"[red]error:[/red] {type(exc).__name__}: {one_line(str(exc))}", highlight=False,
                              soft_wrap=True)
            code = 1
    # Run atexit handlers ourselves (they stop Prefect's ephemeral API server), then leave
    # without the interpreter teardown in which native threads may abort.
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
