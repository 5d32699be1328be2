"""The gate file: per-image rules, relative rules, collection gates and routing, as typed YAML.

Read with ``yaml.safe_load``; every model forbids unknown keys; expressions are parsed by
:mod:`iqaflow.schemas.gate_expr`, never evaluated as Python. Errors name the file, the line (and
column for expressions), what was expected and how to fix it. Columns are checked separately
(:func:`bind`) because they depend on the scorers of the run.

Null handling: a rule whose expression is unknown for an image (a score it reads is null, e.g. the
image did not decode) is *not satisfied* and applies its outcome with the reason ``<reason>:missing``,
unless the rule says ``on_null: pass``.

Reasons may name columns: ``reason: "duplicate_of:{duplicate_of}"`` gives each failed image the
reason ``duplicate_of:<kept image_id>`` (a null value reads ``null``); where the rule is unknown the
reason is the fixed part before the first placeholder plus ``:missing`` (``duplicate_of:missing``).

Columns of the collection pass (duplicates, size outliers) exist only once the whole run is scored:
:func:`bind` with ``later`` type-checks rules that read them and marks them deferred, so the shard
task leaves them to the final gate pass (:meth:`GateFile.shard_rules`).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import yaml
from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from iqaflow.errors import ConfigError
from iqaflow.schemas import gate_expr
from iqaflow.schemas.duplicates import DuplicatePolicy
from iqaflow.schemas.gate_sections import (
    Collection,
    CollectionGate,
    CopyRoute,
    DriftGate,
    Label,
    ManifestRoute,
    MeanGate,
    MoveRoute,
    QuantileGate,
    RateGate,
    RouteRule,
    Severity,
    TagRoute,
    ValuesGate,
    _Strict,
    gate_name,
    has_reason,
)
from iqaflow.schemas.results import COLLECTION_FIELDS, Col

GATES_KEY = b"iqaflow.gates"  # Parquet metadata: fingerprint of the gate file that wrote the gate columns
MISSING_SUFFIX = ":missing"
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_REASON_TEXT = re.compile(r"^[A-Za-z0-9_.:-]*$")
NULL_TEXT = "null"  # a null placeholder value in a reason
# Kinds of the columns the collection pass adds (pass as ``later`` to bind before it has run).
COLLECTION_KINDS: dict[str, str] = {f.name: gate_expr.value_kind(f.type) for f in COLLECTION_FIELDS}
Outcome = Literal["flag", "reject"]


def reason_placeholders(reason: str) -> list[str]:
    """Column names in a reason's ``{column}`` placeholders, in order of first use."""
    return list(dict.fromkeys(_PLACEHOLDER.findall(reason)))


def _check_reason(reason: str) -> str:
    names = _PLACEHOLDER.findall(reason)
    text = _PLACEHOLDER.sub("", reason)
    bad = [n for n in names if not _IDENT.match(n)]
    if bad or "{" in text or "}" in text:
        raise ValueError(f"reason {reason!r}: placeholders are column names in braces, e.g. "
                         "'duplicate_of:{duplicate_of}'")
    if not _REASON_TEXT.match(text) or not reason[:1].isalnum() and not reason.startswith("{") \
            or len(_PLACEHOLDER.sub("x", reason)) > 64:
        raise ValueError(f"reason {reason!r}: expected up to 64 letters, digits, '_', '.', ':' or '-' (starting "
                         "with a letter or digit), with optional {column} placeholders")
    return reason


# Re-exported: the gate file's sections are part of this module's interface.
__all__ = ["Collection", "CollectionGate", "CopyRoute", "DriftGate", "Label", "ManifestRoute", "MeanGate", "MoveRoute",
           "QuantileGate", "RateGate", "RouteRule", "Severity", "TagRoute", "ValuesGate", "gate_name",
           "has_reason", "GateFile", "ImageRule", "RelativeRule", "bind", "load_gate_file",
           "parse_gate_text"]


class ImageRule(_Strict):
    """``require`` must hold for an image, else ``outcome`` with ``reason`` (evaluated per shard, or in the
    final pass when it reads collection columns)."""

    name: Label
    require: str = Field(min_length=1)
    outcome: Outcome
    reason: str | None = None  # a label, optionally with {column} placeholders filled per image
    on_null: Literal["fail", "pass"] = "fail"
    optional: bool = False  # skip (with a note) when the run lacks a column the rule reads

    @field_validator("reason")
    @classmethod
    def _reason(cls, value: str | None) -> str | None:
        return None if value is None else _check_reason(value)

    @property
    def label(self) -> str:
        """The reason as written (with its placeholders, if any)."""
        return self.reason or self.name

    @property
    def reason_columns(self) -> list[str]:
        return reason_placeholders(self.reason or "")

    @property
    def reason_key(self) -> str:
        """The reason's fixed part: the whole label, or the text before the first placeholder (the rule's
        name if that is empty). Unknown rows get ``<key>:missing``; reason counts group by it."""
        if not self.reason_columns:
            return self.label
        head = self.label.split("{", 1)[0].rstrip(":._-")
        return head or self.name

    def render_reason(self, values: Mapping[str, Any]) -> str:
        """The reason for one image, ``values`` holding its placeholder columns."""
        def text(match: re.Match[str]) -> str:
            v = values.get(match.group(1))
            if v is None:
                return NULL_TEXT
            if isinstance(v, bool):
                return str(v).lower()
            return f"{v:.6g}" if isinstance(v, float) else str(v)

        return _PLACEHOLDER.sub(text, self.label)

    def ast(self) -> gate_expr.Node:
        return gate_expr.parse(self.require)

    def expr_columns(self) -> list[str]:
        return gate_expr.columns(self.ast())

    def used_columns(self) -> list[str]:
        """Columns of the condition, then those the reason names."""
        return list(dict.fromkeys([*self.expr_columns(), *self.reason_columns]))


class RelativeRule(_Strict):
    """Rank the run's not-yet-rejected images by ``by``; the ones not kept get ``outcome``."""

    name: Label
    by: str
    keep_top_k: int | None = Field(None, ge=0)
    keep_top_percent: float | None = Field(None, ge=0, le=100)
    reject_bottom_percent: float | None = Field(None, ge=0, le=100)
    higher_is_better: bool | None = None  # default: the scorer's own direction, else higher
    outcome: Outcome
    reason: Label | None = None
    on_null: Literal["fail", "pass"] = "fail"
    optional: bool = False

    @model_validator(mode="after")
    def _one_kind(self) -> RelativeRule:
        given = [k for k in ("keep_top_k", "keep_top_percent", "reject_bottom_percent") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"relative rule {self.name!r}: expected exactly one of keep_top_k, keep_top_percent, "
                             f"reject_bottom_percent; got {given or 'none'}")
        return self

    @property
    def label(self) -> str:
        return self.reason or self.name

    def used_columns(self) -> list[str]:
        return [self.by]


class GateFile(_Strict):
    """A whole gate file. ``{run}`` in routing destinations is the run's folder."""

    version: Literal[1] = 1
    name: Label
    description: str = ""
    image_rules: list[ImageRule] = Field(default_factory=list)
    relative_rules: list[RelativeRule] = Field(default_factory=list)
    collection: Collection = Field(default_factory=Collection)
    routing: list[RouteRule] = Field(default_factory=list)
    duplicates: DuplicatePolicy = Field(default_factory=DuplicatePolicy)  # the collection pass (schemas.duplicates)
    _source: str = PrivateAttr("gate file")
    _lines: dict[tuple[Any, ...], tuple[int, int]] = PrivateAttr(default_factory=dict)
    _skipped: list[str] = PrivateAttr(default_factory=list)
    _deferred: frozenset[str] = PrivateAttr(default_factory=frozenset)

    @model_validator(mode="after")
    def _unique_names(self) -> GateFile:
        names = [r.name for r in (*self.image_rules, *self.relative_rules)]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"rule names must be unique; repeated: {', '.join(dupes)}")
        return self

    @property
    def source(self) -> str:
        return self._source

    @property
    def skipped(self) -> list[str]:
        """Optional rules left out by :func:`bind` because the run lacks their columns."""
        return list(self._skipped)

    @property
    def deferred(self) -> list[str]:
        """Image rules (by name) that read columns the collection pass adds: decided in the final pass only."""
        return [r.name for r in self.image_rules if r.name in self._deferred]

    def shard_rules(self) -> list[ImageRule]:
        """The image rules the shard task can decide as it writes (all but the deferred ones)."""
        return [r for r in self.image_rules if r.name not in self._deferred]

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]

    def where(self, *path: Any) -> str:
        """``file:line`` of the node at ``path`` (or its nearest ancestor) for error messages."""
        for n in range(len(path), -1, -1):
            if path[:n] in self._lines:
                return f"{self._source}:{self._lines[path[:n]][0]}"
        return self._source


def _index_lines(node: yaml.Node, path: tuple[Any, ...], out: dict[tuple[Any, ...], tuple[int, int]]) -> None:
    """(line, column) of every node, 1-based line, keyed by its path of keys and list indices."""
    col = node.start_mark.column + (1 if isinstance(node, yaml.ScalarNode) and node.style in ("'", '"') else 0)
    out[path] = (node.start_mark.line + 1, col)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            _index_lines(value, (*path, key.value), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_lines(item, (*path, i), out)


def _nearest(
    lines: Mapping[tuple[Any, ...], tuple[int, int]], loc: tuple[Any, ...], data: Any
) -> tuple[int, int] | None:
    """Line of a pydantic error location; union tags in ``loc`` (``quantile`` for a ``type: quantile``
    gate) are skipped, as are parts that are not YAML keys."""
    path: tuple[Any, ...] = ()
    node = data
    for part in loc:
        if isinstance(node, dict) and part in (node.get("type"), node.get("action")):
            continue
        if (*path, part) in lines:
            path = (*path, part)
            node = node[part] if isinstance(node, dict | list) else None
    return lines.get(path)


def _read_text(path: str | Path) -> str:
    import fsspec  # a gate file may live next to the data (s3://...)

    try:
        fs, p = fsspec.core.url_to_fs(str(path))
        with fs.open(p, "rb") as fh:
            return fh.read().decode()
    except FileNotFoundError:
        raise ConfigError(f"gate file {str(path)!r} not found. Fix: pass an existing YAML gate file "
                          "(see examples/ for the three uses)") from None


def parse_gate_text(text: str, source: str = "gate file") -> GateFile:
    """Validate YAML ``text``; every problem is a ConfigError naming ``source:line``."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}. Fix: check indentation and quoting") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with name, image_rules, relative_rules, collection, "
                          f"routing; got {type(data).__name__}")
    lines: dict[tuple[Any, ...], tuple[int, int]] = {}
    if node is not None:
        _index_lines(node, (), lines)
    try:
        spec = GateFile.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            at = _nearest(lines, tuple(err["loc"]), data)
            where = f"{source}:{at[0]}" if at else source
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key; remove it or check its spelling against the gate file schema"
            problems.append(f"{where}: {loc}: {msg}")
        raise ConfigError("; ".join(problems) + ". Fix: edit the gate file (examples/ shows each rule kind)") from None
    spec._source, spec._lines = source, lines
    for i, rule in enumerate(spec.image_rules):
        try:
            rule.ast()
        except gate_expr.ExprError as exc:
            raise _expr_error(spec, i, rule, exc) from None
    return spec


def load_gate_file(path: str | Path) -> GateFile:
    return parse_gate_text(_read_text(path), str(path))


def _expr_error(spec: GateFile, i: int, rule: ImageRule, exc: gate_expr.ExprError) -> ConfigError:
    line, col = spec._lines.get(("image_rules", i, "require"), (0, 0))
    where = f"{spec.source}:{line}:{col + exc.pos + 1}" if line else spec.source
    pointer = f"{rule.require[: exc.pos]}>>>{rule.require[exc.pos:]}"
    return ConfigError(f"{where}: rule {rule.name!r} require: {exc.message} (at {pointer!r}). Fix: write a "
                       "condition like 'sharpness >= 120 and error_code is null' using results columns")


def column_kinds(schema: pa.Schema) -> dict[str, str]:
    """Columns a gate may read (every results column but the gate columns themselves)."""
    return {f.name: gate_expr.value_kind(f.type) for f in schema if f.name not in (Col.GATE_STATUS, Col.GATE_REASONS)}


def bind(spec: GateFile, schema: pa.Schema, hints: Mapping[str, str] | None = None,
         later: Mapping[str, str] | None = None) -> GateFile:
    """Check every column the gate file uses against ``schema``; returns the spec without optional rules
    whose columns are absent. ``hints`` maps a column to a fix (e.g. the scorer that would produce it).

    ``later`` maps columns the run will add after the shard task (the collection pass: ``COLLECTION_KINDS``)
    to their kinds: rules reading them are checked as if they were there and marked deferred."""
    own = column_kinds(schema)
    later = {c: k for c, k in (later or {}).items() if c not in own}
    kinds = {**own, **later}
    hints = hints or {}
    skipped: list[str] = []
    deferred: set[str] = set()

    def fail(path: tuple[Any, ...], what: str, exc: gate_expr.ExprError | None, column: str | None) -> ConfigError:
        fix = hints.get(column or "", "use a column of this run's results (scorer outputs or fixed columns)")
        at = spec._lines.get(path)
        where = f"{spec.source}:{at[0]}:{at[1] + (exc.pos if exc else 0) + 1}" if at else spec.source
        msg = exc.message if exc else ""
        return ConfigError(f"{where}: {what}: {msg}{' ' if msg.endswith(('?', '.')) else '. '}Fix: {fix}")

    def missing(cols: list[str]) -> list[str]:
        return [c for c in cols if c not in kinds]

    image_rules = []
    for i, rule in enumerate(spec.image_rules):
        if rule.optional and missing(rule.used_columns()):
            skipped.append(f"image rule {rule.name!r}: no column {', '.join(missing(rule.used_columns()))}")
            continue
        try:
            gate_expr.check(rule.ast(), kinds)
        except gate_expr.ExprError as exc:
            col = next(iter(missing(rule.expr_columns())), None)
            what = f"rule {rule.name!r} require {rule.require!r}"
            raise fail(("image_rules", i, "require"), what, exc, col) from None
        unknown = missing(rule.reason_columns)
        if unknown:
            close = difflib.get_close_matches(unknown[0], list(kinds), n=3, cutoff=0.6)
            hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else "no such results column."
            raise fail(("image_rules", i, "reason"), f"rule {rule.name!r} reason {rule.reason!r}",
                       gate_expr.ExprError(f"unknown column {unknown[0]!r} in a {{placeholder}}; {hint}", 0),
                       unknown[0])
        if any(c in later for c in rule.used_columns()):
            deferred.add(rule.name)
        image_rules.append(rule)
    relative = []
    for i, rel in enumerate(spec.relative_rules):
        if rel.by not in kinds or kinds[rel.by] != "number":
            if rel.optional and rel.by not in kinds:
                skipped.append(f"relative rule {rel.name!r}: no column {rel.by}")
                continue
            problem = f"{'unknown' if rel.by not in kinds else 'non-numeric'} column {rel.by!r}"
            raise fail(("relative_rules", i, "by"), f"relative rule {rel.name!r} by",
                       gate_expr.ExprError(problem, 0), rel.by)
        relative.append(rel)
    for i, gate in enumerate(spec.collection.gates):
        column = getattr(gate, "column", None)
        if column is not None and kinds.get(column) != "number":
            problem = f"{'unknown' if column not in kinds else 'non-numeric'} column {column!r}"
            raise fail(("collection", "gates", i, "column"), f"collection gate {gate_name(gate)!r}",
                       gate_expr.ExprError(problem, 0), column)
    bound = spec.model_copy(update={"image_rules": image_rules, "relative_rules": relative})
    bound._source, bound._lines, bound._skipped = spec._source, spec._lines, skipped
    bound._deferred = frozenset(deferred)
    return bound
