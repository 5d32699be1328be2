"""Offline weights store: a folder, an fsspec URL (s3://...) or, later, MLflow ``models:/``.

Every file is checked by sha256 before it is loaded. The expected hash comes from the
scorer's ``WeightSpec`` when the weights are published ones, otherwise from the store's own
``manifest.json`` (written by ``put``), which guards against corrupt or swapped files.
Nothing is downloaded unless the user opts in with ``allow_download`` and a base URL.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import fsspec

from iqaflow.errors import WeightsError
from iqaflow.models.info import ScorerInfo, WeightSpec

ENV_STORE = "IQAFLOW_WEIGHTS"
ENV_DOWNLOAD_URL = "IQAFLOW_WEIGHTS_URL"
MANIFEST = "manifest.json"
# Weights shipped inside the package (e.g. the default NR model): searched after the store.
PACKAGED_DIR = Path(__file__).resolve().parent.parent / "weights"
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "iqaflow" / "weights"

Readiness = Literal["ready", "missing", "mismatch"]


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _how_to_fix(spec: WeightSpec, root: str) -> str:
    return (
        f"put {spec.filename!r} in the weights store {root!r} (set ${ENV_STORE} or `weights:` in the run "
        f"config), e.g. with `iqaflow weights add FILE`, or produce it with the scorer's fit/train command"
    )


@dataclass
class WeightsStore:
    root: str
    allow_download: bool = False
    download_url: str | None = None

    @classmethod
    def from_env(cls, root: str | None = None, allow_download: bool = False) -> WeightsStore:
        return cls(
            root or os.environ.get(ENV_STORE) or str(CACHE_DIR),
            allow_download,
            os.environ.get(ENV_DOWNLOAD_URL),
        )

    # -- manifest -----------------------------------------------------------------------------------------
    def _fs(self) -> tuple[fsspec.AbstractFileSystem, str]:
        fs, path = fsspec.core.url_to_fs(self.root)
        return fs, path.rstrip("/")

    def manifest(self) -> dict[str, str]:
        fs, root = self._fs()
        path = f"{root}/{MANIFEST}"
        if not fs.exists(path):
            return {}
        with fs.open(path, "rb") as fh:
            return dict(json.load(fh))

    def _expected(self, spec: WeightSpec) -> str | None:
        return spec.sha256 or self.manifest().get(spec.filename)

    # -- writing --------------------------------------------------------------------------------------------
    def put_bytes(self, filename: str, data: bytes) -> str:
        """Store ``data`` as ``filename`` and record its sha256 in the store manifest; returns the hash."""
        if "/" in filename or filename.startswith(".") or filename == MANIFEST:
            raise WeightsError(f"weights file name {filename!r} must be a plain file name")
        digest = hashlib.sha256(data).hexdigest()
        fs, root = self._fs()
        fs.makedirs(root, exist_ok=True)
        fs.pipe_file(f"{root}/{filename}", data)
        manifest = self.manifest()
        manifest[filename] = digest
        fs.pipe_file(f"{root}/{MANIFEST}", json.dumps(manifest, indent=2, sort_keys=True).encode())
        return digest

    def put_state_dict(self, filename: str, state: dict[str, Any]) -> str:
        import io

        import torch

        buf = io.BytesIO()
        torch.save(state, buf)
        return self.put_bytes(filename, buf.getvalue())

    # -- reading --------------------------------------------------------------------------------------------
    def status(self, spec: WeightSpec) -> Readiness:
        try:
            self.local_path(spec)
            return "ready"
        except WeightsError as exc:
            return "mismatch" if "sha256" in str(exc) else "missing"

    def _candidates(self, spec: WeightSpec) -> list[tuple[str, str | None]]:
        """(URL, expected hash) pairs in search order: the store, then weights shipped in the package."""
        fs, root = self._fs()
        found = [(fs.unstrip_protocol(f"{root}/{spec.filename}"), self._expected(spec))]
        packaged = PACKAGED_DIR / spec.filename
        if packaged.is_file():
            pk = json.loads((PACKAGED_DIR / MANIFEST).read_text()) if (PACKAGED_DIR / MANIFEST).is_file() else {}
            found.append((str(packaged), spec.sha256 or pk.get(spec.filename)))
        return found

    def local_path(self, spec: WeightSpec) -> Path:
        """A verified local file for ``spec``; remote files are copied into the local cache first."""
        for url, expected in self._candidates(spec):
            fs, path = fsspec.core.url_to_fs(url)
            if not fs.exists(path):
                continue
            local = Path(path) if fs.protocol in ("file", ("file", "local")) or Path(path).is_file() else None
            if local is None:
                local = CACHE_DIR / "remote" / hashlib.sha256(url.encode()).hexdigest()[:16] / spec.filename
                if not local.is_file() or (expected and sha256_file(local) != expected):
                    local.parent.mkdir(parents=True, exist_ok=True)
                    fs.get_file(path, str(local))
            return self._verified(local, spec, expected)
        if self.allow_download and self.download_url:
            return self._download(spec)
        raise WeightsError(f"weights file {spec.filename!r} not found. Fix: {_how_to_fix(spec, self.root)}")

    def _verified(self, local: Path, spec: WeightSpec, expected: str | None) -> Path:
        if expected is None:
            raise WeightsError(
                f"weights file {spec.filename!r} has no known sha256 (not in the scorer's spec nor in "
                f"{MANIFEST}). Fix: add it with `iqaflow weights add`, which records its hash"
            )
        got = sha256_file(local)
        if got != expected:
            raise WeightsError(
                f"weights file {str(local)!r} has sha256 {got}, expected {expected}. "
                f"Fix: replace it with the right file; {_how_to_fix(spec, self.root)}"
            )
        return local

    def _download(self, spec: WeightSpec) -> Path:
        url = f"{self.download_url.rstrip('/')}/{spec.filename}"  # type: ignore[union-attr]
        local = CACHE_DIR / "downloads" / spec.filename
        local.parent.mkdir(parents=True, exist_ok=True)
        with fsspec.open(url, "rb") as src, open(local, "wb") as dst:
            dst.write(src.read())
        return self._verified(local, spec, spec.sha256)

    def load_state_dict(self, spec: WeightSpec, map_location: str = "cpu") -> dict[str, Any]:
        import torch

        return torch.load(self.local_path(spec), map_location=map_location, weights_only=True)


class ShippedWeights:
    """Mixin for scorers whose weights are published files shipped in ``iqaflow/weights``: their pinned
    hashes admit only those files, so ``make_test_weights`` gives a test store copies of them."""

    info: ClassVar[ScorerInfo]

    @classmethod
    def make_test_weights(cls, store: WeightsStore, seed: int = 0) -> None:
        del seed
        for spec in cls.info.weights:
            shipped = PACKAGED_DIR / spec.filename
            if not shipped.is_file():
                raise WeightsError(f"shipped weights {str(shipped)!r} are missing. Fix: reinstall iqaflow")
            store.put_bytes(spec.filename, shipped.read_bytes())


_lock = threading.Lock()
_store: WeightsStore | None = None


def configure_store(root: str | None = None, allow_download: bool = False) -> WeightsStore:
    """Set the process-wide store (workers call this with the run config's ``weights`` value)."""
    global _store
    with _lock:
        _store = WeightsStore.from_env(root, allow_download)
        return _store


def get_store() -> WeightsStore:
    global _store
    with _lock:
        if _store is None:
            _store = WeightsStore.from_env()
        return _store
