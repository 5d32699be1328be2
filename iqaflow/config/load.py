"""YAML config file + command-line flags -> a validated pydantic model, every problem one ConfigError.

Shared by the run, training and default-model configs, so each bad value is reported the same way:
where it came from (file or command line), the field, what was expected, what was given and the fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from iqaflow.errors import ConfigError

M = TypeVar("M", bound=BaseModel)
DEFAULT_FIX = "see the command's --help for the allowed values"


def read_mapping(path: str | Path, example: str | None = None) -> dict[str, Any]:
    """A YAML file's top-level mapping (safe_load); a missing file, bad YAML or a non-mapping is a ConfigError."""
    p = Path(path)
    if not p.is_file():
        eg = f", e.g. {example}" if example else ""
        raise ConfigError(f"config file {str(p)!r} not found. Fix: pass an existing YAML file to --config{eg}")
    try:
        loaded = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {str(p)!r}: expected a mapping of keys to values, got {type(loaded).__name__}")
    return loaded


def _keys_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed where ``loc`` points (nested models followed); [] where it is not a model."""
    for part in loc:
        field = model.model_fields.get(str(part))
        sub = field.annotation if field else None
        if not (isinstance(sub, type) and issubclass(sub, BaseModel)):
            return []
        model = sub
    return list(model.model_fields)


def format_error(model: type[BaseModel], err: Mapping[str, Any], origin: str,
                 fix_hints: Mapping[str, str], default_fix: str) -> str:
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if not err["loc"]:  # a model validator's message is complete in itself
        return f"{origin}: {msg}"
    if err["type"] == "extra_forbidden":
        allowed = _keys_at(model, tuple(err["loc"][:-1]))
        close = difflib.get_close_matches(str(err["loc"][-1]), allowed, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"allowed keys: {', '.join(allowed)}"
        return f"{origin}: unknown key {loc!r}. Fix: remove it ({hint})"
    if err["type"] == "missing":
        return f"{origin}: field {loc!r} is required. Fix: set {loc} in the config or on the command line"
    fix = fix_hints.get(str(err["loc"][0]), default_fix)
    return f"{origin}: field {loc!r}: expected {msg}; got {err.get('input')!r}. Fix: {fix}"


def validate(model: type[M], values: Mapping[str, Any], origin: str, fix_hints: Mapping[str, str] | None = None,
             default_fix: str = DEFAULT_FIX) -> M:
    """``model`` from ``values``; all problems joined into one ConfigError."""
    try:
        return model.model_validate(dict(values))
    except ValidationError as exc:
        problems = (format_error(model, e, origin, fix_hints or {}, default_fix) for e in exc.errors())
        raise ConfigError("; ".join(problems)) from None


def load(model: type[M], path: str | Path | None, overrides: Mapping[str, Any] | None = None, *,
         example: str | None = None, fix_hints: Mapping[str, str] | None = None,
         default_fix: str = DEFAULT_FIX) -> M:
    """YAML file (if any) overlaid with the flags that were given (``None`` means not given)."""
    values: dict[str, Any] = {}
    origin = "command line"
    if path is not None:
        values.update(read_mapping(path, example))
        origin = f"config {Path(path).name}"
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return validate(model, values, origin, fix_hints, default_fix)
