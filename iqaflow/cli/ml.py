"""``iqaflow train`` and ``iqaflow evaluate`` (registered on the main Typer app in ``iqaflow.cli``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.table import Table

TRAIN_EXAMPLES = """
Examples:

  iqaflow train --pristine ../shared/data/kodak --name rank-small --epochs 20

  iqaflow train --pristine ./pristine --mos ./clive/mos.csv --images ./clive/images --name clive-ft

  iqaflow train --config train.yaml --tracking-uri http://127.0.0.1:5000

Then score with it:  iqaflow score ./photos --models mlflow:models:/rank-small/1
"""

EVALUATE_EXAMPLES = """
Examples:

  iqaflow evaluate --models sharpness,noise --mos ./clive/mos.csv --images ./clive/images

  iqaflow evaluate --synthetic ../shared/data/kodak --models sharpness,noise,psnr

  iqaflow evaluate --pairs ./2afc.csv --models mlflow:models:/rank-small/1
"""


def _default_uri(given: str | None) -> str:
    uri = given or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or f"sqlite:///{(Path('mlruns').resolve() / 'mlflow.db').as_posix()}"


def _is_default_nr_recipe(config: Path) -> bool:
    """A default NR recipe names its ``scorer`` (or, the classic one, has ``model`` and ``pretrain``); a train
    config has none of these."""
    import yaml

    try:
        data = yaml.safe_load(config.read_text())
    except (OSError, yaml.YAMLError):
        return False  # load_train_config reports it with the field and the fix
    return isinstance(data, dict) and ("scorer" in data or ("model" in data and "pretrain" in data))


def train(
    name: Annotated[str | None, typer.Option(help="Registered model name")] = None,
    pristine: Annotated[str | None, typer.Option(help="Folder of pristine images (ranking pre-training)")] = None,
    mos: Annotated[str | None, typer.Option(help="CSV of human scores: path,mos[,content] (fine-tuning)")] = None,
    images: Annotated[str | None, typer.Option(help="Folder the CSV paths are relative to")] = None,
    epochs: Annotated[int | None, typer.Option(help="Pre-training epochs [default: 10]")] = None,
    finetune_epochs: Annotated[int | None, typer.Option(help="Fine-tuning epochs [default: 10]")] = None,
    split: Annotated[str | None, typer.Option(help="holdout or kfold (by content)")] = None,
    classify: Annotated[bool | None, typer.Option(help="Add the distortion classification head")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI [default: ./mlruns/mlflow.db]")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Train config YAML")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect logs")] = False,
) -> None:
    """Train a quality model (RankIQA pre-training, MOS fine-tuning), log it to MLflow and register it.
    With the default NR scorer's recipe (configs/default_nr.yaml) as --config: rebuild iqaflow_nr's weights."""
    from iqaflow.cli.common import console, quiet_prefect

    if config is not None and _is_default_nr_recipe(config):
        from iqaflow.cli.default_nr import train_default

        return train_default(config=config, verbose=verbose)

    quiet_prefect(verbose)
    from iqaflow.config.train import load_train_config

    cfg = load_train_config(config, {
        "name": name, "pristine": pristine, "mos": mos, "images": images, "epochs": epochs,
        "finetune_epochs": finetune_epochs, "split": split, "classify": classify, "device": device,
        "mlflow_tracking_uri": tracking_uri,
    })
    from iqaflow.flows.train import run_train

    result = run_train(cfg)
    table = Table(title=f"iqaflow train {cfg.name}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in result.metrics.items():
        table.add_row(k, f"{v:.4f}")
    console.print(table)
    console.print(f"MLflow run {result.run_id} in {result.tracking_uri}")
    if result.scorer:
        console.print(f"[bold]registered:[/bold] {result.model_uri}. Score with: iqaflow score DIR --models "
                      f"{result.scorer} --tracking-uri {result.tracking_uri}")


def evaluate(
    models: Annotated[str | None, typer.Option(help="Comma-separated scorer names (mlflow:models:/NAME/V too)")] = None,
    mos: Annotated[str | None, typer.Option(help="CSV with path (or image), mos [, reference]")] = None,
    images: Annotated[str | None, typer.Option(help="Folder the CSV paths are relative to")] = None,
    synthetic: Annotated[str | None, typer.Option(help="Folder of pristine images: the synthetic benchmark")] = None,
    pairs: Annotated[str | None, typer.Option(help="2AFC CSV: image_a,image_b,prefer_a")] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the CIs")] = 1000,
    max_side: Annotated[int, typer.Option(help="Synthetic: downscale pristine images to this longer side")] = 512,
    max_images: Annotated[int | None, typer.Option(help="Synthetic: use at most this many pristine images")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap and the synthetic distortions")] = 0,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI [default: ./mlruns/mlflow.db]")] = None,
    track: Annotated[bool, typer.Option(help="Log the results to MLflow")] = True,
    cv: Annotated[Path | None, typer.Option(help="Default NR recipe YAML: its evaluation table against NIQE, BRISQUE, "
                                            "Laplacian (as evaluate-default)")] = None,
) -> None:
    """Scorers against human scores (SRCC, PLCC, KRCC, RMSE + CIs), 2AFC pairs, or the synthetic benchmark."""
    from iqaflow.cli.common import console
    from iqaflow.errors import ConfigError
    from iqaflow.models.device import resolve_device
    from iqaflow.models.registry import set_model_registry_uri
    from iqaflow.tasks.learn import evaluate as ev

    if cv is not None:  # the default NR scorer's recipe, cross-validated (iqaflow.cli.default_nr)
        from iqaflow.cli.default_nr import evaluate_default

        return evaluate_default(config=cv)
    if models is None:
        raise ConfigError("evaluate: expected --models (or --cv RECIPE). Fix: pass comma-separated scorer names")
    if sum(x is not None for x in (mos, synthetic, pairs)) != 1:
        raise ConfigError("evaluate: expected exactly one of --mos, --synthetic, --pairs. Fix: pass one of them")
    names = [m.strip() for m in models.split(",") if m.strip()]
    uri = _default_uri(tracking_uri)
    set_model_registry_uri(os.environ.get("MLFLOW_REGISTRY_URI") or uri)
    dev = resolve_device(device)
    params = {"models": ",".join(names), "device": dev, "seed": str(seed)}
    if mos is not None:
        results = ev.evaluate_rated(names, ev.read_rated(mos, images), dev, bootstrap, seed)
        table = Table(title=f"agreement with {Path(mos).name} (scores signed higher = better; "
                            f"\\[lo, hi] = 95% bootstrap CI, {bootstrap} resamples)")
        for col in ("scorer", "n", "SRCC", "PLCC", "KRCC", "RMSE"):
            table.add_column(col, justify="left" if col == "scorer" else "right")
        for r in results:
            if r.skipped:
                continue
            cells = [f"{r.values[k]:.4f}" + (f" [{r.ci[k][0]:.3f}, {r.ci[k][1]:.3f}]" if k in r.ci else "")
                     for k in ("srcc", "plcc", "krcc", "rmse")]
            table.add_row(r.model, str(r.n), *cells)
        console.print(table)
        for r in results:
            if r.skipped:
                console.print(f"skipped {r.model}: {r.skipped}", highlight=False, soft_wrap=True)
        if track:
            run = ev.log_evaluation(uri, "iqaflow-evaluate", "mos", {**params, "mos": mos, "bootstrap": str(bootstrap)},
                                    ev.agreement_metrics(results), results)
            console.print(f"MLflow run {run} in {uri}")
    elif pairs is not None:
        acc = ev.evaluate_2afc(names, pairs, images, dev)
        table = Table(title=f"2AFC agreement with {Path(pairs).name} (chance 0.5)")
        table.add_column("scorer")
        table.add_column("pairwise accuracy", justify="right")
        for k, v in acc.items():
            table.add_row(k, f"{v:.4f}")
        console.print(table)
        if track:
            run = ev.log_evaluation(uri, "iqaflow-evaluate", "2afc", {**params, "pairs": pairs},
                                    {f"{k}.pair_acc": v for k, v in acc.items()}, acc)
            console.print(f"MLflow run {run} in {uri}")
    else:
        assert synthetic is not None
        bench, skipped = ev.synthetic_benchmark(names, synthetic, dev, max_side, (), seed, max_images)
        print_synthetic(bench, skipped, synthetic)
        if track:
            flat = {f"{m}.{d}.srcc": v for m, row in bench.items() for d, v in row.items()}
            run = ev.log_evaluation(uri, "iqaflow-evaluate", "synthetic", {**params, "pristine": synthetic,
                                    "max_side": str(max_side)}, flat, {"srcc": bench, "skipped": skipped})
            console.print(f"MLflow run {run} in {uri}")


def print_synthetic(bench: dict[str, dict[str, float]], skipped: dict[str, str], folder: str) -> None:
    from iqaflow.cli.common import console

    types = list(next(iter(bench.values())).keys()) if bench else []
    table = Table(title=f"synthetic benchmark on {folder}: mean per-image SRCC(score, -level), 1 = perfect order")
    table.add_column("scorer")
    for d in [*types, "mean"]:
        table.add_column(d, justify="right")
    for name, row in bench.items():
        values = list(row.values())
        table.add_row(name, *(f"{v:.3f}" for v in values), f"{np.nanmean(values):.3f}")
    console.print(table)
    for name, why in skipped.items():
        console.print(f"skipped {name}: {why}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command(epilog=TRAIN_EXAMPLES)(train)
    app.command(epilog=EVALUATE_EXAMPLES)(evaluate)
