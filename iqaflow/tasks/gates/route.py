"""Routing: per gate status, copy / move / tag images or write manifests. Dry run unless applied.

Every action is a small registered class with ``plan`` (decide each step by looking at the
source and destination, changing nothing) and ``apply`` (carry out one planned step). Safety
rules shared by all of them:

* idempotent: a destination that already holds the same bytes (size + sha256) is skipped, and a
  destination holding different bytes is refused, never overwritten;
* never outside the destination: an image's name under the destination is its path relative to
  the run's source root; names with ``..``, absolute parts or control characters are refused;
* a move deletes the source only after the copy was read back and its sha256 matched; and
  the source must still hold the bytes that were scored (results ``content_hash``).
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import pyarrow as pa
import pyarrow.parquet as pq

from iqaflow.errors import RoutingError
from iqaflow.schemas.gates import CopyRoute, ManifestRoute, MoveRoute, RouteRule, TagRoute
from iqaflow.schemas.results import Col
from iqaflow.tasks.io.storage import atomic_write, join, open_fs

_BAD_NAME = re.compile(r"[\x00-\x1f\x7f\\]")
_TAG_VALUE = re.compile(r"[^A-Za-z0-9 +\-=._:/@]")


@dataclass(frozen=True)
class Item:
    """One image as routing sees it: a row of the gated results."""

    uri: str
    image_id: str
    content_hash: str | None
    status: str
    reasons: tuple[str, ...]


@dataclass
class Step:
    rule: int
    action: str
    uri: str
    dest: str | None
    state: str  # todo | done | skip | refused | error
    note: str = ""
    reasons: list[str] = field(default_factory=list)  # why the image is routed (its gate reasons)


@dataclass(frozen=True)
class RouteContext:
    run_root: str  # replaces {run} in destinations
    source_root: str  # names under a destination are relative to this


def expand(dest: str, run_root: str) -> str:
    """Destination with ``{run}`` replaced; any other placeholder is refused."""
    out = dest.replace("{run}", run_root.rstrip("/"))
    if "{" in out or "}" in out:
        raise RoutingError(f"routing destination {dest!r}: only the {{run}} placeholder is known. "
                           "Fix: write a folder, s3:// prefix or {run}/sub-folder")
    return out.rstrip("/")


def relative_name(uri: str, source_root: str) -> str:
    """``uri`` relative to ``source_root``; refuses names that could leave a destination folder."""
    prefix = source_root.rstrip("/") + "/"
    if not uri.startswith(prefix):
        raise RoutingError(f"{uri!r} is not under the source root {source_root!r}")
    rel = uri[len(prefix):]
    parts = rel.split("/")
    if not rel or _BAD_NAME.search(rel) or any(p in ("", ".", "..") for p in parts) or re.match(r"^[A-Za-z]:", rel):
        raise RoutingError(f"refused name {rel!r}: path traversal or unsafe characters")
    return rel


def safe_join(dest_root: str, rel: str) -> str:
    """``dest_root/rel``, checked to stay inside ``dest_root`` after normalisation."""
    target = join(dest_root, rel)
    scheme, sep, path = target.rpartition("://")
    root_path = dest_root.rpartition("://")[2].rstrip("/")
    if not posixpath.normpath(path).startswith(posixpath.normpath(root_path) + "/"):
        raise RoutingError(f"refused {rel!r}: it would be written outside {dest_root!r}")
    return f"{scheme}{sep}{path}" if sep else path


def source_root(uris: Sequence[str], configured: str | None) -> str:
    """The run's source folder when every URI is under it, else the URIs' common folder."""
    if configured and all(u.startswith(configured.rstrip("/") + "/") for u in uris):
        return configured.rstrip("/")
    if not uris:
        return configured or ""
    common = posixpath.commonprefix(list(uris))
    return common[: common.rfind("/")] if "/" in common else ""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read(uri: str) -> bytes | None:
    fs, path = open_fs(uri)
    try:
        with fs.open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def _size(uri: str) -> int | None:
    fs, path = open_fs(uri)
    try:
        return int(fs.info(path)["size"])
    except FileNotFoundError:
        return None


def holds(uri: str, sha256: str | None, size: int | None = None) -> bool | None:
    """True if ``uri`` holds bytes with ``sha256``, False if it holds other bytes, None if absent."""
    actual = _size(uri)
    if actual is None:
        return None
    if size is not None and actual != size:
        return False
    data = _read(uri)
    return None if data is None else (sha256 is not None and _sha256(data) == sha256)


class RouteAction:
    """Base of the routing actions; ``name`` matches the gate file's ``action``."""

    name: ClassVar[str]

    def plan(self, index: int, rule: RouteRule, items: Sequence[Item], ctx: RouteContext) -> list[Step]:
        raise NotImplementedError

    def apply(self, step: Step, rule: RouteRule, items: dict[str, Item]) -> Step:
        raise NotImplementedError


_ACTIONS: dict[str, type[RouteAction]] = {}


def register_action(cls: type[RouteAction]) -> type[RouteAction]:
    _ACTIONS[cls.name] = cls
    return cls


def get_action(name: str) -> RouteAction:
    if name not in _ACTIONS:
        raise RoutingError(f"unknown routing action {name!r}; expected one of {', '.join(sorted(_ACTIONS))}")
    return _ACTIONS[name]()


def registered_actions() -> dict[str, type[RouteAction]]:
    return dict(_ACTIONS)


@register_action
class CopyAction(RouteAction):
    name = "copy"
    deletes_source: ClassVar[bool] = False

    def plan(self, index: int, rule: RouteRule, items: Sequence[Item], ctx: RouteContext) -> list[Step]:
        assert isinstance(rule, CopyRoute | MoveRoute)
        root = expand(rule.to, ctx.run_root)
        for fs in {open_fs(root)[0], *(open_fs(i.uri)[0] for i in items[:1])}:
            fs.invalidate_cache()
        return [self._plan_one(index, item, root, ctx) for item in items]

    def _plan_one(self, index: int, item: Item, root: str, ctx: RouteContext) -> Step:
        step = Step(index, self.name, item.uri, None, "todo", reasons=list(item.reasons))
        try:
            step.dest = safe_join(root, relative_name(item.uri, ctx.source_root))
        except RoutingError as exc:
            step.state, step.note = "refused", str(exc)
            return step
        src_size = _size(item.uri)
        expected = item.content_hash
        if expected is None and src_size is not None:
            data = _read(item.uri)
            expected = _sha256(data) if data is not None else None
        at_dest = holds(step.dest, expected)
        if at_dest is False:
            step.state, step.note = "refused", "destination exists with different content; not overwritten"
        elif at_dest and (src_size is None or not self.deletes_source):
            step.state, step.note = "skip", "already at the destination"
        elif at_dest:
            step.note = "copy verified earlier; delete the source"
        elif src_size is None:
            step.state, step.note = "error", "source missing and not at the destination"
        return step

    def apply(self, step: Step, rule: RouteRule, items: dict[str, Item]) -> Step:
        assert step.dest is not None
        item = items[step.uri]
        data = _read(step.uri)
        if data is None:
            step.state, step.note = "error", "source disappeared"
            return step
        digest = _sha256(data)
        if item.content_hash is not None and digest != item.content_hash:
            step.state, step.note = "error", "source changed since it was scored; re-run iqaflow score first"
            return step
        if holds(step.dest, digest, len(data)) is not True:
            fs, path = open_fs(step.dest)
            atomic_write(fs, path, data)
            fs.invalidate_cache(posixpath.dirname(path))
        if holds(step.dest, digest, len(data)) is not True:  # read back: size and sha256
            step.state, step.note = "error", "copy could not be verified; source kept"
            return step
        if self.deletes_source:
            fs, path = open_fs(step.uri)
            fs.rm_file(path)
        step.state = "done"
        return step


@register_action
class MoveAction(CopyAction):
    name = "move"
    deletes_source = True


@register_action
class TagAction(RouteAction):
    """S3 object tags on the source image (merged with tags already there)."""

    name = "tag"

    @staticmethod
    def tags_for(rule: TagRoute, item: Item) -> dict[str, str]:
        fields = {"status": item.status, "reasons": "+".join(item.reasons) or "none"}
        return {k[:128]: _TAG_VALUE.sub("_", v.format(**fields))[:256] for k, v in rule.tags.items()}

    def plan(self, index: int, rule: RouteRule, items: Sequence[Item], ctx: RouteContext) -> list[Step]:
        assert isinstance(rule, TagRoute)
        steps = []
        for item in items:
            step = Step(index, self.name, item.uri, item.uri, "todo", ",".join(f"{k}={v}" for k, v in
                                                                               self.tags_for(rule, item).items()))
            if not item.uri.startswith("s3://"):
                step.state, step.note = "refused", "object tags need S3 URIs (s3://...)"
            else:
                fs, path = open_fs(item.uri)
                try:
                    have = fs.get_tags(path)
                except FileNotFoundError:  # e.g. moved by an earlier rule of a previous run
                    step.state, step.note = "skip", "source no longer exists; nothing to tag"
                    steps.append(step)
                    continue
                if self.tags_for(rule, item).items() <= have.items():
                    step.state = "skip"
            steps.append(step)
        return steps

    def apply(self, step: Step, rule: RouteRule, items: dict[str, Item]) -> Step:
        assert isinstance(rule, TagRoute)
        fs, path = open_fs(step.uri)
        fs.put_tags(path, self.tags_for(rule, items[step.uri]), mode="m")
        step.state = "done"
        return step


@register_action
class ManifestAction(RouteAction):
    """``name.parquet`` (uri, image_id, gate_status, gate_reasons) and ``name.txt`` (one URI a line)."""

    name = "manifest"

    @staticmethod
    def files(rule: ManifestRoute, items: Sequence[Item]) -> dict[str, bytes]:
        table = pa.table({
            Col.URI: pa.array([i.uri for i in items], pa.string()),
            Col.IMAGE_ID: pa.array([i.image_id for i in items], pa.string()),
            Col.GATE_STATUS: pa.array([i.status for i in items], pa.string()),
            Col.GATE_REASONS: pa.array([list(i.reasons) for i in items], pa.list_(pa.string())),
        })
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        text = "".join(f"{i.uri}\n" for i in items).encode()
        return {f"{rule.name}.parquet": buf.getvalue(), f"{rule.name}.txt": text}

    def plan(self, index: int, rule: RouteRule, items: Sequence[Item], ctx: RouteContext) -> list[Step]:
        assert isinstance(rule, ManifestRoute)
        root = expand(rule.to, ctx.run_root)
        open_fs(root)[0].invalidate_cache()
        txt = join(root, f"{rule.name}.txt")
        same = _read(txt) == self.files(rule, items)[f"{rule.name}.txt"] and _size(join(root, f"{rule.name}.parquet"))
        return [Step(index, self.name, "", join(root, f"{rule.name}.parquet"), "skip" if same else "todo",
                     f"{len(items)} URIs with status {'/'.join(s.value for s in rule.when)}")]

    def apply(self, step: Step, rule: RouteRule, items: dict[str, Item]) -> Step:
        assert isinstance(rule, ManifestRoute) and step.dest is not None
        root = step.dest.rsplit("/", 1)[0]
        chosen = [i for i in items.values() if i.status in {s.value for s in rule.when}]
        fs, path = open_fs(root)
        for name, data in self.files(rule, chosen).items():
            atomic_write(fs, join(path, name), data)
        step.state = "done"
        return step
