"""fsspec helpers: one way to open any URL and to commit a file atomically."""

from __future__ import annotations

import os
import uuid

import fsspec
from fsspec.implementations.local import LocalFileSystem


def open_fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """Filesystem and path for a local path or any fsspec URL (s3://, gs://, memory://...)."""
    fs, path = fsspec.core.url_to_fs(url)
    return fs, path


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def full_uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """The URI users see in results: a plain path locally, ``proto://path`` elsewhere."""
    if is_local(fs):
        return path
    return fs.unstrip_protocol(path)


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def atomic_write(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write ``data`` so readers see either nothing or the whole file.

    Locally: temp file in the same folder + fsync + rename. Object stores: one PUT, which is
    atomic by the store's own semantics.
    """
    parent = path.rsplit("/", 1)[0]
    if is_local(fs):
        os.makedirs(parent, exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    else:
        from iqaflow.tasks.io.read import with_retries

        with_retries(lambda: fs.pipe_file(path, data))
