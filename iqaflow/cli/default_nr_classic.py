"""``iqaflow train-default`` and ``iqaflow evaluate-default``: the shipped default NR scorer's recipe.

Registered on the main Typer app in ``iqaflow.cli``; heavy imports happen inside the commands.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

DEFAULT_RECIPE = Path("configs/default_nr_classic.yaml")

TRAIN_DEFAULT_EXAMPLES = """
Examples (from the repository root, the shared data at ../shared/data):

  iqaflow train-default --config configs/default_nr_classic.yaml

  iqaflow train-default --config configs/default_nr_classic.yaml --out ./my-weights

Reproduces iqaflow/weights/iqaflow_nr_classic.pt from scratch (a few minutes on one CPU core).
"""

EVALUATE_DEFAULT_EXAMPLES = """
Examples:

  iqaflow evaluate-default --config configs/default_nr_classic.yaml

  iqaflow evaluate-default --config configs/default_nr_classic.yaml --ablation --folds 10
"""


def _progress():  # noqa: ANN202 - rich Progress, imported lazily
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from iqaflow.cli.common import err_console

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=err_console, transient=True)


def _load(config: Path, overrides: dict) -> object:
    from iqaflow.config.default_nr_classic import load_recipe

    return load_recipe(config, overrides)


def train_default(
    config: Annotated[Path, typer.Option("--config", "-c", help="Recipe YAML")] = DEFAULT_RECIPE,
    out: Annotated[str | None, typer.Option(help="Folder for the weights, manifest.json and NOTICE")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (crops, distortions, MLP initialisation)")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect logs")] = False,
) -> None:
    """Train the default NR scorer (iqaflow_nr_classic) from scratch with the recipe and write its weights."""
    from iqaflow.cli.common import console, quiet_prefect

    quiet_prefect(verbose)
    recipe = _load(config, {"out": out, "seed": seed})
    from iqaflow.flows.train_default_classic import run_train_default
    from iqaflow.models.classical.default_nr_classic import SHIPPED_SHA256

    result = run_train_default(recipe, str(config))
    console.print(f"[bold]wrote[/bold] {result.path}  ({Path(result.path).stat().st_size / 1e3:.0f} kB, "
                  f"{result.n_images} rated images, {result.n_synthetic} synthetic pre-training images)")
    console.print(f"sha256 {result.sha256}")
    if result.sha256 == SHIPPED_SHA256:
        console.print("identical to the shipped weights (iqaflow.models.classical.default_nr_classic.SHIPPED_SHA256)")
    else:
        console.print("differs from the shipped weights: to ship it, set SHIPPED_SHA256 in "
                      "iqaflow/models/deep/default_nr.py to this hash (the scorer admits only the pinned file)")


def _fmt(mean: float, std: float) -> str:
    return "-" if math.isnan(mean) else f"{mean:.3f} ± {std:.3f}" if not math.isnan(std) else f"{mean:.3f}"


def evaluate_default(
    config: Annotated[Path, typer.Option("--config", "-c", help="Recipe YAML")] = DEFAULT_RECIPE,
    folds: Annotated[int | None, typer.Option(help="Number of folds [default: the recipe's, 5]")] = None,
    repeats: Annotated[int | None, typer.Option(help="k-fold splits to draw, seeds seed.. [default: 1]")] = None,
    baseline_pristine: Annotated[
        str | None, typer.Option(help="Pristine folder NIQE and BRISQUE are fitted on [default: the recipe's]")
    ] = None,
    ablation: Annotated[bool, typer.Option(help="Also cross-validate the recipe without each of its parts")] = False,
    speed_images: Annotated[int | None, typer.Option(help="Images timed for the speed figure (0: skip)")] = None,
    limit: Annotated[int | None, typer.Option(help="Use only the first N rated images (quick look)")] = None,
) -> None:
    """K-fold content-split CV of the default NR scorer against NIQE, BRISQUE and the Laplacian: one table."""
    from iqaflow.cli.common import console
    from iqaflow.tasks.learn import default_nr_classic as t
    from iqaflow.tasks.learn import evaluate_default_classic as ev

    recipe = _load(config, {})
    updates = {k: v for k, v in (("folds", folds), ("repeats", repeats), ("baseline_pristine", baseline_pristine),
                                 ("speed_images", speed_images)) if v is not None}
    if updates:
        recipe = recipe.model_copy(update={"evaluation": recipe.evaluation.model_copy(update=updates)})
    with _progress() as progress:
        task = progress.add_task("features of rated images", total=None)
        rated = t.read_rated(recipe, lambda i, n: progress.update(task, completed=i, total=n), limit)
        synthetic = None
        if recipe.model.pretrain_steps > 0:
            task = progress.add_task("synthetic pre-training set", total=None)
            synthetic = t.synthetic_set(t.pristine_crops(recipe), recipe.pretrain.distortions, recipe.seed,
                                        lambda i, n: progress.update(task, completed=i, total=n))
        task = progress.add_task("baselines (NIQE, BRISQUE, Laplacian)", total=None)
        baselines = ev.baseline_scores(rated.paths, recipe.evaluation.baseline_pristine,
                                       lambda i, n: progress.update(task, completed=i, total=n))
        k, reps = recipe.evaluation.folds, recipe.evaluation.repeats
        n_trained = 2 + (len(ev.ABLATIONS) if ablation else 0)
        task = progress.add_task("cross-validation fits", total=k * reps * n_trained)
        rows = ev.cross_validate(recipe, rated, synthetic, baselines, ablation,
                                 lambda name, f: progress.advance(task))
    split = f"seed {recipe.seed}" if reps == 1 else f"{reps} splits, seeds {recipe.seed}-{recipe.seed + reps - 1}"
    table = Table(title=f"{k}-fold content-split CV, {len(rated.mos)} images of {Path(recipe.mos).parent.name}, "
                        f"{split} (mean ± sd over folds)")
    per = "per-fold SRCC" if reps == 1 else "SRCC per split"
    for col in ("model", "SRCC", "PLCC", per):
        table.add_column(col, justify="left" if col == "model" else "right")
    for row in rows:
        per_values = row.values("srcc") if reps == 1 else row.repeat_means("srcc")
        table.add_row(row.model, _fmt(row.mean("srcc"), row.std("srcc")), _fmt(row.mean("plcc"), row.std("plcc")),
                      " ".join(f"{v:.3f}" if reps > 1 else f"{v:.2f}" for v in per_values))
    console.print(table)
    console.print("Every CLIVE image is its own scene, so folds by image are content folds. PLCC after the "
                  "4-parameter logistic fitted per fold; lower-is-better scores negated.", soft_wrap=True)
    for row in rows:
        console.print(f"  {row.model}: {row.note}", soft_wrap=True, highlight=False)
    if not recipe.evaluation.baseline_pristine:
        console.print("niqe/brisque left out: set evaluation.baseline_pristine (e.g. ../shared/data/kodak)")
    if recipe.evaluation.speed_images > 0:
        sp = ev.measure_speed(rated.paths, recipe.evaluation.speed_images)
        console.print(f"speed of the shipped iqaflow_nr_classic, one core ({os.cpu_count()} on this machine), "
                      f"{sp.images} "
                      f"images of {sp.side}: {sp.scorer_per_s:.0f} images/s scoring decoded images, "
                      f"{sp.with_decode_per_s:.0f} images/s with file read and JPEG decode")
