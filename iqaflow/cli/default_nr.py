"""``iqaflow train-default`` and ``iqaflow evaluate-default``: the shipped default NR scorer's recipe.

The recipe's ``scorer`` key picks the scorer: ``iqaflow_nr`` (``configs/default_nr.yaml``) or the former
default ``iqaflow_nr_classic`` (``configs/default_nr_classic.yaml``, ``cli_default_nr_classic``).
Registered on the main Typer app in ``iqaflow.cli``; heavy imports happen inside the commands.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

DEFAULT_RECIPE = Path("configs/default_nr.yaml")

TRAIN_DEFAULT_EXAMPLES = """
Examples (from the repository root; BIQ2021's train split in data/biq2021, the shared data at ../shared/data):

  iqaflow train-default --config configs/default_nr.yaml

  iqaflow train-default --config configs/default_nr_classic.yaml   (the former default, iqaflow_nr_classic)

Rebuilds iqaflow/weights/iqaflow_nr.pt from scratch: about 15 minutes on 2 cores, most of it computing
features once (cached in .cache/iqaflow-features).
"""

EVALUATE_DEFAULT_EXAMPLES = """
Examples:

  iqaflow evaluate-default --config configs/default_nr.yaml

  iqaflow evaluate-default --config configs/default_nr_classic.yaml --folds 10
"""


def _progress():  # noqa: ANN202 - rich Progress, imported lazily
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from iqaflow.cli.common import err_console

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=err_console, transient=True)


def _is_classic(config: Path) -> bool:
    from iqaflow.config.default_nr import recipe_scorer

    return recipe_scorer(config) == "iqaflow_nr_classic"


def train_default(
    config: Annotated[Path, typer.Option("--config", "-c", help="Recipe YAML")] = DEFAULT_RECIPE,
    out: Annotated[str | None, typer.Option(help="Folder for the weights, manifest.json and NOTICE")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (CV folds and sample)")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect logs")] = False,
) -> None:
    """Train the default NR scorer from scratch with the recipe and write its weights."""
    if _is_classic(config):
        from iqaflow.cli.default_nr_classic import train_default as classic

        return classic(config=config, out=out, seed=seed, verbose=verbose)
    from iqaflow.cli.common import console
    from iqaflow.config.default_nr import load_recipe
    from iqaflow.models.deep.default_nr import HEADS
    from iqaflow.tasks.learn import default_nr_train as t

    recipe = load_recipe(config, {"out": out, "seed": seed})
    with _progress() as progress:
        bar = progress.add_task("features", total=None)
        result = t.train(recipe, lambda name, i, n: progress.update(bar, description=f"features of {name}",
                                                                      completed=i, total=n),
                         lambda line: console.print(f"  {line}", highlight=False))
    console.print(f"[bold]wrote[/bold] {result.path}  ({Path(result.path).stat().st_size / 1e6:.1f} MB, "
                  f"{result.n_images} rated images, {result.n_support} support vectors, C={result.c:g}, "
                  f"gamma={result.gamma:g}/variance)")
    console.print(f"sha256 {result.sha256}")
    pinned = HEADS[recipe.scorer].info.weights[1].sha256
    if result.sha256 == pinned:
        console.print(f"identical to the shipped weights of {recipe.scorer} (iqaflow.models.deep.default_nr)")
    else:
        console.print(f"differs from the shipped weights of {recipe.scorer}: to ship it, pin this hash in "
                      "iqaflow/models/deep/default_nr.py (the scorer admits only the pinned file)")


def evaluate_default(
    config: Annotated[Path, typer.Option("--config", "-c", help="Recipe YAML")] = DEFAULT_RECIPE,
    folds: Annotated[int | None, typer.Option(help="Classic recipe only: number of CV folds")] = None,
    speed_images: Annotated[int | None, typer.Option(help="Images timed for the speed figure (0: skip)")] = None,
) -> None:
    """Held-out agreement of iqaflow_nr with people, beside iqaflow_nr_classic, NIQE, BRISQUE and the Laplacian."""
    if _is_classic(config):
        from iqaflow.cli.default_nr_classic import evaluate_default as classic

        return classic(config=config, folds=folds, speed_images=speed_images)
    from iqaflow.cli.common import console
    from iqaflow.config.default_nr import load_recipe
    from iqaflow.tasks.learn import evaluate_default as ev

    recipe = load_recipe(config, {})
    if speed_images is not None:
        recipe = recipe.model_copy(update={"evaluation": recipe.evaluation.model_copy(
            update={"speed_images": speed_images})})
    with _progress() as progress:
        bar = progress.add_task("features", total=None)
        report = ev.evaluate(recipe, lambda name, i, n: progress.update(bar, description=name, completed=i, total=n))
    table = Table(title="Agreement with human scores on images the model did not learn from")
    for col in ("model", *(f"{s} {m}" for s in report.sets for m in ("SRCC", "PLCC"))):
        table.add_column(col, justify="left" if col == "model" else "right", no_wrap=col == "model")
    for row in report.rows:
        cells = []
        for s in report.sets:
            v = row.values.get(s)
            cells += ["-", "-"] if v is None else [f"{v['srcc']:.3f}", f"{v['plcc']:.3f}"]
        table.add_row(row.model, *cells)
    console.print(table)
    for row in report.rows:
        console.print(f"  {row.model}: {row.note}", soft_wrap=True, highlight=False)
    console.print("PLCC after the 4-parameter logistic fitted on the same images; lower-is-better scores negated; "
                  "'-': the model was trained on that set.", soft_wrap=True)
    if report.curation:
        from iqaflow.tasks.learn.evaluate_default import BAD_BELOW, TARGET_RECALL

        console.print(f"Curation on {report.sets[0]} (bad: MOS < {BAD_BELOW}): a cut learnt on a seeded half to catch "
                      f"{TARGET_RECALL:.0%} of its bad images, checked on the other half:", soft_wrap=True)
        for c in report.curation:
            console.print(f"  {c.model}: precision {c.precision:.2f}, recall {c.recall:.2f}, rejects "
                          f"{c.rejected:.0%} of the images", highlight=False)
    if report.speed is not None:
        sp = report.speed
        console.print(f"speed of the shipped iqaflow_nr, one core ({os.cpu_count()} on this machine), {sp.images} "
                      f"images: {sp.with_decode_per_s:.1f} images/s with file read and JPEG decode "
                      f"({'bf16' if sp.bf16 else 'fp32'} backbone)")


def register(app: typer.Typer) -> None:
    app.command("train-default", epilog=TRAIN_DEFAULT_EXAMPLES)(train_default)
    app.command("evaluate-default", epilog=EVALUATE_DEFAULT_EXAMPLES)(evaluate_default)
