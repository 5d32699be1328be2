"""Pair images with reference (master) images for full-reference scorers.

An image's reference is the file at the same path relative to ``reference_root`` as the image
has relative to the source; failing that, a file in that folder with the same stem and any
image extension (``page-001.jpg`` -> ``page-001.tif``). The source walk visits one folder at a
time, so the matching folder under ``reference_root`` is listed once and only it is held in
memory: a million references never become a million-entry set.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from iqaflow.errors import SourceError
from iqaflow.tasks.io.storage import full_uri, join, open_fs


def _stem(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else name


def relative_to(root: str, path: str) -> str | None:
    """``path`` relative to ``root`` (both filesystem paths without protocol), or None if outside it."""
    prefix = root.rstrip("/") + "/"
    return path[len(prefix) :] if path.startswith(prefix) else None


class ReferenceMatcher:
    """Look up references by relative path, listing one reference folder at a time (cached until the next)."""

    def __init__(self, reference_root: str, extensions: list[str]) -> None:
        self.fs, root = open_fs(reference_root)
        self.root = root.rstrip("/") or root
        self.url = reference_root
        if not self.fs.exists(self.root) or self.fs.isfile(self.root):
            raise SourceError(
                f"reference_root {reference_root!r} is not an existing folder or prefix. "
                "Fix: point reference_root at the folder that holds the reference images"
            )
        self.extensions = tuple(e.lower() for e in extensions)
        self.looked_up = 0
        self.matched = 0
        self._dir: str | None = None
        self._names: dict[str, str] = {}
        self._stems: dict[str, str] = {}

    def match(self, rel_path: str) -> str | None:
        """The reference URI for the image at ``rel_path`` (relative to the source), or None."""
        self.looked_up += 1
        rel_dir, _, name = rel_path.rpartition("/")
        if rel_dir != self._dir:
            self._load(rel_dir)
        path = self._names.get(name) or self._stems.get(_stem(name))
        if path is None:
            return None
        self.matched += 1
        return full_uri(self.fs, path)

    def _load(self, rel_dir: str) -> None:
        self._dir = rel_dir
        self._names, self._stems = {}, {}
        folder = join(self.root, rel_dir) if rel_dir else self.root
        try:
            entries = self.fs.ls(folder, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return
        finally:
            self.fs.invalidate_cache(folder)  # object stores cache listings; keep memory flat
        for info in sorted(entries, key=lambda e: e["name"]):
            if info.get("type") == "directory":
                continue
            path = info["name"]
            name = path.rsplit("/", 1)[-1]
            self._names[name] = path
            if name.lower().endswith(self.extensions):
                self._stems.setdefault(_stem(name), path)  # sorted: the first extension wins, deterministically


def blank_to_null(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Empty reference URIs (CSV cells) mean "no reference", the same as null."""
    return pc.if_else(pc.fill_null(pc.equal(column, ""), False), pa.scalar(None, column.type), column)


def resolve_relative(column: pa.ChunkedArray, reference_root: str) -> pa.ChunkedArray:
    """Manifest reference URIs that are relative paths, joined onto ``reference_root``; others unchanged."""
    absolute = pc.or_(pc.starts_with(column, "/"), pc.match_substring(column, "://"))
    joined = pc.binary_join_element_wise(reference_root.rstrip("/"), column, "/")
    return pc.if_else(pc.fill_null(absolute, True), column, joined)
