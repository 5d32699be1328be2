"""``iqaflow models``, ``iqaflow weights`` and ``iqaflow fit``: what can score, and the weights store behind it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from iqaflow.cli.common import console
from iqaflow.cli.preflight import weights_readiness

if TYPE_CHECKING:
    from iqaflow.models.base import Scorer, WeightSpec
    from iqaflow.models.weights import WeightsStore


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
    from iqaflow.models.deep.nets.tflite_read import read_tflite
    from iqaflow.models.weights import WeightsStore

    if not source.is_file():
        raise WeightsError(f"{str(source)!r} is not a file. Fix: pass the path of a .tflite file")
    store = WeightsStore.from_env(weights)
    digest = store.put_state_dict(name, read_tflite(source))
    console.print(f"{name}  sha256={digest}  -> {store.root}")


def fit(
    model: Annotated[str, typer.Argument(help="What to fit: niqe (pristine model) or brisque (regressor)")],
    pristine: Annotated[Path, typer.Option(help="Folder of pristine (undistorted) images")],
    weights: Annotated[str | None, typer.Option(help="Weights store [default: $IQAFLOW_WEIGHTS]")] = None,
) -> None:
    """Fit NIQE's or BRISQUE's parameters to your pristine images for the niqe_fitted / brisque_fitted scorers
    (niqe and brisque themselves use the published models shipped with iqaflow)."""
    from iqaflow.errors import ConfigError
    from iqaflow.models.classical.nss_fit import FITTED_SCORER, FITTERS, read_images
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


def register(app: typer.Typer) -> None:
    app.command(epilog="Examples:\n\n  iqaflow models\n\n  iqaflow models kang\n\n  iqaflow models --long\n\n"
                "  iqaflow models --weights s3://bucket/iqaflow-weights/")(models)
    app.add_typer(weights_app, name="weights")
    app.command(
    epilog="Examples:\n\n  iqaflow fit niqe --pristine ./pristine   # then score with --models niqe_fitted\n\n"
    "  iqaflow fit brisque --pristine ./pristine --weights s3://bucket/iqaflow-weights/"
)(fit)
