"""List a source into a manifest Parquet file, streaming, in a deterministic order.

The manifest's row groups are exactly ``shard_size`` rows, so row group *i* is shard *i*:
a worker reads only its own slice and the flow never holds the whole listing in memory.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from iqaflow.errors import ConfigError, SourceError
from iqaflow.schemas.results import MANIFEST_SCHEMA, Col, ErrorCode
from iqaflow.tasks.io.references import ReferenceMatcher, blank_to_null, relative_to, resolve_relative
from iqaflow.tasks.io.storage import full_uri, open_fs

log = logging.getLogger(__name__)

MANIFEST_SUFFIXES = (".csv", ".parquet")


def _mtime(info: dict[str, Any]) -> float | None:
    value = info.get("mtime", info.get("LastModified", info.get("last_modified")))
    if value is None:
        return None
    return value.timestamp() if hasattr(value, "timestamp") else float(value)


def _etag(info: dict[str, Any]) -> str | None:
    value = info.get("ETag", info.get("etag"))
    return str(value).strip('"') if value else None


SNIFF_BYTES = 4096  # enough for DICOM's preamble + magic and a gzipped NIfTI header


def no_extension(name: str) -> bool:
    """A name without an extension, or whose "extension" is digits (UID-named DICOM files: 1.2.840.1134)."""
    if name.startswith(".") or name.upper() == "DICOMDIR":  # hidden files; DICOMDIR indexes hold no pixels
        return False
    return "." not in name or name.rsplit(".", 1)[1].isdigit()


def _sniffs_medical(fs: Any, path: str) -> bool:
    from iqaflow.tasks.decode import sniff_medical

    try:
        with fs.open(path, "rb") as fh:
            return sniff_medical(fh.read(SNIFF_BYTES)) is not None
    except OSError:
        return False


def iter_listing(
    source: str, extensions: list[str], recursive: bool = True, references: ReferenceMatcher | None = None,
    sniff_extensionless: bool = False,
) -> Iterator[dict[str, Any]]:
    """Yield manifest rows for every file under ``source`` with one of ``extensions`` (case-insensitive).

    With ``references``, each row's reference URI is the file at the same relative path there. With
    ``sniff_extensionless``, files without an extension are listed too when they start like DICOM or NIfTI.
    """
    fs, root = open_fs(source)
    if not fs.exists(root):
        raise SourceError(f"source {source!r} does not exist. Fix: pass an existing folder or URL")
    if fs.isfile(root):
        raise SourceError(
            f"source {source!r} is a file; expected a folder, a prefix or a manifest ending in "
            f"{'/'.join(MANIFEST_SUFFIXES)}"
        )
    exts = tuple(extensions)
    # References kept inside the source folder are not images to score.
    skip_dir = references.root if references is not None and type(references.fs) is type(fs) else None
    for dirpath, dirs, files in fs.walk(root, maxdepth=None if recursive else 1, detail=True):
        # Sorting in place keeps the walk order (and so shard ids) stable across runs.
        ordered = sorted((k, v) for k, v in dirs.items() if f"{dirpath.rstrip('/')}/{k}" != skip_dir)
        dirs.clear()
        dirs.update(ordered)
        for name in sorted(files):
            info = files[name]
            path = info["name"]
            if info.get("type") == "directory":
                continue
            if not path.lower().endswith(exts) and not (
                sniff_extensionless and no_extension(name.rsplit("/", 1)[-1]) and _sniffs_medical(fs, path)
            ):
                continue
            rel = relative_to(root, path) if references is not None else None
            yield {
                Col.URI: full_uri(fs, path),
                Col.BYTES: info.get("size"),
                Col.MTIME: _mtime(info),
                Col.ETAG: _etag(info),
                Col.REFERENCE_URI: references.match(rel) if references is not None and rel is not None else None,
            }


def _read_manifest_file(source: str, reference_root: str | None = None, need_references: bool = False) -> pa.Table:
    fs, path = open_fs(source)
    with fs.open(path, "rb") as fh:
        table = pq.read_table(fh) if path.lower().endswith(".parquet") else pacsv.read_csv(fh)
    if Col.URI not in table.column_names:
        raise SourceError(
            f"manifest {source!r} has no {Col.URI!r} column (columns: {table.column_names}). "
            f"Fix: name the column of image URIs {Col.URI!r}"
        )
    if need_references and Col.REFERENCE_URI not in table.column_names:
        raise ConfigError(
            f"the run has full-reference models but manifest {source!r} has no {Col.REFERENCE_URI!r} column "
            f"(columns: {table.column_names}). Fix: add a {Col.REFERENCE_URI!r} column of reference URIs "
            "(absolute, or relative to reference_root), or drop the full-reference models"
        )
    cols = {}
    for field in MANIFEST_SCHEMA:
        if field.name in table.column_names:
            cols[field.name] = table[field.name].cast(field.type)
        else:
            cols[field.name] = pa.nulls(table.num_rows, field.type)
    cols[Col.REFERENCE_URI] = blank_to_null(cols[Col.REFERENCE_URI])
    if reference_root is not None:
        cols[Col.REFERENCE_URI] = resolve_relative(cols[Col.REFERENCE_URI], reference_root)
    return pa.table(cols, schema=MANIFEST_SCHEMA)


def write_manifest(
    source: str, manifest_path: str, shard_size: int, extensions: list[str], recursive: bool = True,
    reference_root: str | None = None, need_references: bool = False, sniff_extensionless: bool = False,
) -> int:
    """Write the manifest for ``source``; returns the number of images. Empty sources are an error.

    ``need_references`` (the run has FR models) makes a manifest without a reference column an error.
    """
    out_fs, out_path = open_fs(manifest_path)
    out_fs.makedirs(out_path.rsplit("/", 1)[0], exist_ok=True)
    total = 0
    with out_fs.open(out_path, "wb") as fh, pq.ParquetWriter(fh, MANIFEST_SCHEMA) as writer:
        if source.lower().endswith(MANIFEST_SUFFIXES):
            table = _read_manifest_file(source, reference_root, need_references)
            for start in range(0, table.num_rows, shard_size):
                writer.write_table(table.slice(start, shard_size), row_group_size=shard_size)
            total = table.num_rows
        else:
            buffer: list[dict[str, Any]] = []
            matcher = ReferenceMatcher(reference_root, extensions) if reference_root is not None else None
            for row in iter_listing(source, extensions, recursive, matcher, sniff_extensionless):
                buffer.append(row)
                if len(buffer) == shard_size:
                    writer.write_table(pa.Table.from_pylist(buffer, MANIFEST_SCHEMA), row_group_size=shard_size)
                    total += len(buffer)
                    buffer = []
            if buffer:
                writer.write_table(pa.Table.from_pylist(buffer, MANIFEST_SCHEMA), row_group_size=shard_size)
                total += len(buffer)
            if matcher is not None and need_references and matcher.matched < matcher.looked_up:
                log.warning(
                    "%d of %d images have no reference under %s (same relative path or stem); their FR scores "
                    "will be %s", matcher.looked_up - matcher.matched, matcher.looked_up, reference_root,
                    ErrorCode.REFERENCE_MISSING.value,
                )
    if total == 0:
        raise SourceError(
            f"no images found in {source!r} with extensions {', '.join(extensions)}. "
            "Fix: check the path, or set `extensions` in the config"
        )
    return total
