"""Scorers registered by name, plus third-party scorers from the ``iqaflow.scorers`` entry-point group."""

from __future__ import annotations

import difflib
import logging
import threading
from importlib import import_module
from importlib.metadata import entry_points

from iqaflow.errors import UnknownScorerError
from iqaflow.models.base import Scorer, ScorerInfo
from iqaflow.schemas.results import BASE_COLUMNS

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "iqaflow.scorers"
_REGISTRY: dict[str, type[Scorer]] = {}
_entry_points_loaded = False


def register(cls: type[Scorer]) -> type[Scorer]:
    """Class decorator: add a scorer under ``cls.info.name``."""
    info = cls.info
    for out in info.outputs:
        if out in BASE_COLUMNS:
            raise ValueError(f"scorer {cls.__name__}: output {out!r} clashes with a fixed results column")
    existing = _REGISTRY.get(info.name)
    if existing is not None and existing is not cls:
        raise ValueError(f"scorer name {info.name!r} already registered by {existing.__qualname__}")
    _REGISTRY[info.name] = cls
    return cls


# Modules whose import registers the built-in scorers (their @register decorators run).
_BUILTIN_MODULES: tuple[str, ...] = (
    "iqaflow.models.classical.nr",
    "iqaflow.models.classical.nr_extra",
    "iqaflow.models.hygiene",
    "iqaflow.models.classical.nss_scorers",
    "iqaflow.models.deep.default_nr",
    "iqaflow.models.classical.default_nr_classic",
    "iqaflow.models.deep.zoo",
    "iqaflow.models.classical.fr",
    "iqaflow.models.medical",
    "iqaflow.models.printing.lines",
)


def _load_builtin() -> None:
    for module in _BUILTIN_MODULES:
        import_module(module)


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plug-in must not break the built-in scorers
            log.warning("could not load scorer plug-in %s: %s", ep.name, exc)
            continue
        if isinstance(obj, type) and issubclass(obj, Scorer) and obj.info.name not in _REGISTRY:
            register(obj)


def all_scorers() -> dict[str, type[Scorer]]:
    _load_builtin()
    _load_entry_points()
    return dict(sorted(_REGISTRY.items()))


# Names with these prefixes are not registered classes but models resolved at run time, e.g.
# "mlflow:models:/name/1". The module's ``resolve(name, registry_uri) -> type[Scorer]`` fetches and
# builds them. It is named by string and imported lazily (a deliberate, documented exception to the
# layering) so that this package never imports a tracking client itself.
_RESOLVERS: dict[str, str] = {"mlflow:": "iqaflow.tasks.learn.mlflow_models"}
_resolved: dict[tuple[str, str | None], type[Scorer]] = {}
_resolver_lock = threading.Lock()
_model_registry_uri: str | None = None


def set_model_registry_uri(uri: str | None) -> None:
    """Where resolved names (``mlflow:models:/...``) are looked up in this process (None: the resolver's default)."""
    global _model_registry_uri
    _model_registry_uri = uri


def is_resolved_name(name: str) -> bool:
    return any(name.startswith(prefix) for prefix in _RESOLVERS)


def _resolve(name: str) -> type[Scorer]:
    key = (name, _model_registry_uri)
    with _resolver_lock:
        if key not in _resolved:
            module = next(m for prefix, m in _RESOLVERS.items() if name.startswith(prefix))
            cls = import_module(module).resolve(name, _model_registry_uri)
            taken = {o for c in all_scorers().values() for o in c.info.outputs}
            for out in cls.info.outputs:
                if out in BASE_COLUMNS or out in taken:
                    raise UnknownScorerError(
                        f"model {name!r} would write column {out!r}, which is taken by a fixed column or a "
                        "registered scorer. Fix: register the model under another name"
                    )
            _resolved[key] = cls
        return _resolved[key]


def get_scorer_class(name: str) -> type[Scorer]:
    if is_resolved_name(name):
        return _resolve(name)
    scorers = all_scorers()
    if name in scorers:
        return scorers[name]
    close = difflib.get_close_matches(name, scorers, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownScorerError(
        f"unknown scorer {name!r}.{hint} Run `iqaflow models` to list the {len(scorers)} registered scorers."
    )


def scorer_info(name: str) -> ScorerInfo:
    return get_scorer_class(name).info


def create_scorer(name: str, device: str = "cpu") -> Scorer:
    scorer = get_scorer_class(name)()
    scorer.setup(device)
    return scorer
