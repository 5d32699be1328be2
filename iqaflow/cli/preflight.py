"""Preflight: find what a scoring run cannot do before any Prefect server or Dask worker starts.

``iqaflow score`` calls :func:`preflight` right after the run config is validated (which already
checked the models, the gate file and that FR models have a ``reference_root`` or a manifest). Each
check raises the first problem it finds as one :class:`~iqaflow.errors.IqaflowError` line with its fix,
so an expected error ends in one line on stderr and exit code 2 within a couple of seconds:

- weights: every file of every requested scorer is in the weights store (or shipped with iqaflow) and
  matches its sha256 (``WeightsStore.status``);
- references: FR models with a manifest need its ``reference_uri`` column; a ``reference_root`` must exist;
- source: reachable and holding at least one file with a listed extension (stops at the first match and
  after a bounded number of listings; a manifest's header and row count are read, not its rows);
- output: a probe file can be written and deleted under ``out``.

Object stores get short connect/read timeouts and one attempt, and the remote checks run under one
deadline (``$IQAFLOW_PREFLIGHT_TIMEOUT`` seconds, default 10), so an endpoint that does not answer is
reported instead of retried for minutes.
"""

from __future__ import annotations

import os
import re
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from iqaflow.errors import ConfigError, IqaflowError, OutputError, SourceError, WeightsError

if TYPE_CHECKING:
    import fsspec

    from iqaflow.config.run import RunConfig
    from iqaflow.models.base import Scorer, WeightSpec
    from iqaflow.models.weights import WeightsStore

ENV_TIMEOUT = "IQAFLOW_PREFLIGHT_TIMEOUT"
DEFAULT_TIMEOUT_S = 10.0
MAX_LISTINGS = 64  # folders (or listing pages) looked at before the source check gives up looking, and passes
MAX_ENTRIES = 50_000  # entries looked at before the same
MANIFEST_SUFFIXES = (".csv", ".parquet")


def one_line(text: str) -> str:
    """``text`` with its line breaks (and the indentation around them) folded into single spaces."""
    return re.sub(r"\s*[\r\n]+\s*", " ", str(text)).strip()


def _reason(exc: BaseException) -> str:
    text = one_line(str(exc)) or "no details"
    return f"{type(exc).__name__}: {text[:300]}"


# -- weights ------------------------------------------------------------------------------------------------
def weights_readiness(cls: type[Scorer], store: WeightsStore, states: dict[WeightSpec, str] | None = None) -> str:
    """"yes", or each file that is not ready, its state and, where the scorer says (``weights_help``), how to
    supply it: "vgg16-397923af.pth: missing — add torchvision's ImageNet VGG16 with iqaflow weights add"."""
    states = {} if states is None else states
    notes = []
    for spec in cls.info.weights:
        if spec not in states:
            states[spec] = store.status(spec)
        if (state := states[spec]) != "ready":
            hint = getattr(cls, "weights_help", {}).get(spec.filename)
            notes.append(f"{spec.filename}: {state}" + (f" — {hint}" if hint else ""))
    return ", ".join(notes) or "yes"


def check_weights(models: list[str], weights: str | None = None, allow_download: bool = False) -> None:
    """Every weight file of ``models`` present and matching its sha256, else one WeightsError for all of them.

    With ``allow_download`` and a download URL, missing files are left to the workers to fetch; a file that
    is there with the wrong hash is still an error.
    """
    from iqaflow.models.registry import get_scorer_class
    from iqaflow.models.weights import ENV_DOWNLOAD_URL, WeightsStore

    store = WeightsStore.from_env(weights)
    downloads = allow_download and bool(os.environ.get(ENV_DOWNLOAD_URL))
    states: dict[WeightSpec, str] = {}
    problems = []
    for name in models:
        cls = get_scorer_class(name)
        for spec in cls.info.weights:
            states.setdefault(spec, store.status(spec))
        if downloads:
            states.update({s: "ready" for s in cls.info.weights if states[s] == "missing"})
        if (ready := weights_readiness(cls, store, states)) != "yes":
            problems.append(f"{name} ({ready})")
    if problems:
        raise WeightsError(
            f"weights not ready for {'; '.join(problems)} in the weights store {store.root!r}. Fix: add the files "
            "with `iqaflow weights add FILE` (or point --weights / `weights:` / $IQAFLOW_WEIGHTS at the store that "
            "has them; `iqaflow models NAME` says where each comes from), or drop those models"
        )


# -- filesystems with bounded waits -------------------------------------------------------------------------
def bounded_fs(url: str, timeout_s: float = 3.0) -> tuple[fsspec.AbstractFileSystem, str]:
    """Filesystem and path for ``url``; object stores get short timeouts and a single attempt."""
    import fsspec

    protocol = fsspec.core.split_protocol(url)[0]
    if protocol in ("s3", "s3a"):
        fs, path = fsspec.core.url_to_fs(
            url, skip_instance_cache=True,
            config_kwargs={"connect_timeout": timeout_s, "read_timeout": timeout_s,
                           "retries": {"max_attempts": 1, "mode": "standard"}},
        )
        fs.retries = 1  # s3fs's own retry loop around botocore's, with back-off
        return fs, path
    return fsspec.core.url_to_fs(url)


def within(seconds: float, what: str, check: Callable[[], None], error: type[IqaflowError], fix: str) -> None:
    """Run ``check`` in a daemon thread; its IqaflowError is re-raised here, and so is ``error`` on timeout."""
    box: list[BaseException] = []

    def target() -> None:
        try:
            check()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            box.append(exc)

    thread = threading.Thread(target=target, name=f"iqaflow-preflight-{what}", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise error(f"{what} did not answer within {seconds:g} s. Fix: {fix} (or raise ${ENV_TIMEOUT})")
    if box:
        raise box[0]


# -- source -------------------------------------------------------------------------------------------------
_SOURCE_FIX = ("check the path or URL, and for s3:// the endpoint ($AWS_ENDPOINT_URL or ~/.aws) and credentials")


def _no_extension(name: str) -> bool:
    if name.startswith(".") or name.upper() == "DICOMDIR":
        return False
    return "." not in name or name.rsplit(".", 1)[1].isdigit()


def _first_match(fs: Any, root: str, exts: tuple[str, ...], recursive: bool, extensionless: bool) -> str | None:
    """The first file under ``root`` with one of ``exts``; "" when the bounds were hit before one was seen."""
    listings = entries = 0
    for _dirpath, _dirs, files in fs.walk(root, maxdepth=None if recursive else 1, detail=True):
        listings += 1
        for name, info in files.items():
            entries += 1
            if info.get("type") == "directory":
                continue
            base = name.rsplit("/", 1)[-1]
            if base.lower().endswith(exts) or (extensionless and _no_extension(base)):
                return str(info.get("name", name))
        if listings >= MAX_LISTINGS or entries >= MAX_ENTRIES:
            return ""  # too big to look through here: discovery will tell
    return None


def _check_manifest(fs: Any, path: str, source: str, need_references: bool) -> None:
    from iqaflow.schemas.results import Col

    if not fs.exists(path):
        raise SourceError(f"manifest {source!r} does not exist. Fix: pass an existing .csv/.parquet manifest")
    with fs.open(path, "rb") as fh:
        if path.lower().endswith(".parquet"):
            import pyarrow.parquet as pq

            meta = pq.ParquetFile(fh).metadata
            columns, rows = list(meta.schema.names), meta.num_rows
        else:
            head = fh.read(1 << 16).decode("utf-8", "replace").splitlines()
            columns = [c.strip().strip('"') for c in head[0].split(",")] if head else []
            rows = sum(1 for line in head[1:] if line.strip())
    if Col.URI not in columns:
        raise SourceError(
            f"manifest {source!r} has no {Col.URI!r} column (columns: {columns}). "
            f"Fix: name the column of image URIs {Col.URI!r}"
        )
    if rows == 0:
        raise SourceError(f"manifest {source!r} lists no images. Fix: add rows, or pass the folder instead")
    if need_references and Col.REFERENCE_URI not in columns:
        raise ConfigError(
            f"the run has full-reference models but manifest {source!r} has no {Col.REFERENCE_URI!r} column "
            f"(columns: {columns}). Fix: add a {Col.REFERENCE_URI!r} column of reference URIs "
            "(absolute, or relative to reference_root), or drop the full-reference models"
        )


def check_source(source: str, extensions: list[str], recursive: bool = True, sniff_extensionless: bool = False,
                 need_references: bool = False, timeout_s: float = 3.0) -> None:
    """``source`` reachable and not empty: a folder/prefix with at least one matching file, or a manifest
    with a ``uri`` column and rows (and a ``reference_uri`` column when ``need_references``)."""
    try:
        fs, root = bounded_fs(source, timeout_s)
        root = root.rstrip("/") or root
        if source.lower().endswith(MANIFEST_SUFFIXES):
            _check_manifest(fs, root, source, need_references)
            return
        if not fs.exists(root):
            raise SourceError(f"source {source!r} does not exist. Fix: pass an existing folder or URL")
        if fs.isfile(root):
            raise SourceError(
                f"source {source!r} is a file; expected a folder, a prefix or a manifest ending in .csv/.parquet. "
                "Fix: pass the folder that holds the images"
            )
        exts = tuple(e.lower() for e in extensions)
        if _first_match(fs, root, exts, recursive, sniff_extensionless) is None:
            raise SourceError(
                f"no images found in {source!r} with extensions {', '.join(extensions)}. "
                "Fix: check the path, or set `extensions` in the config"
            )
    except IqaflowError:
        raise
    except Exception as exc:  # noqa: BLE001 - unreachable endpoints, denied access, bad URLs: one line
        raise SourceError(f"source {source!r} cannot be read ({_reason(exc)}). Fix: {_SOURCE_FIX}") from None


def check_references(reference_root: str | None, timeout_s: float = 3.0) -> None:
    """A configured ``reference_root`` (FR models) exists."""
    if reference_root is None:
        return
    try:
        fs, root = bounded_fs(reference_root, timeout_s)
        exists = fs.exists(root.rstrip("/") or root)
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(
            f"reference_root {reference_root!r} cannot be read ({_reason(exc)}). Fix: {_SOURCE_FIX}"
        ) from None
    if not exists:
        raise ConfigError(
            f"reference_root {reference_root!r} does not exist, so the full-reference models have no references. "
            "Fix: pass the folder or URL of the reference images (--reference-root), or drop the FR models"
        )


# -- output -------------------------------------------------------------------------------------------------
def check_output(out: str, timeout_s: float = 3.0) -> None:
    """A probe file can be created and deleted under ``out`` (a folder ``out`` itself creates is removed)."""
    probe = None
    try:
        fs, root = bounded_fs(out, timeout_s)
        root = root.rstrip("/") or root
        existed = fs.exists(root)
        fs.makedirs(root, exist_ok=True)
        probe = f"{root}/.iqaflow-preflight-{uuid.uuid4().hex}"
        fs.pipe_file(probe, b"iqaflow preflight\n")
        fs.rm_file(probe)
        if not existed:
            try:
                fs.rmdir(root)
            except Exception:  # noqa: BLE001, S110 - object stores have no folders to remove
                pass
    except Exception as exc:  # noqa: BLE001
        raise OutputError(
            f"output {out!r} is not writable ({_reason(exc)}). Fix: pass --out a folder or URL this user can "
            "write to (for s3:// check the bucket, the endpoint and the credentials)"
        ) from None


# -- all of it ----------------------------------------------------------------------------------------------
def preflight(cfg: RunConfig, timeout_s: float | None = None) -> None:
    """Raise the first thing ``cfg``'s run cannot do, as one IqaflowError line with its fix."""
    if timeout_s is None:
        timeout_s = float(os.environ.get(ENV_TIMEOUT) or DEFAULT_TIMEOUT_S)
    check_weights(cfg.models, cfg.weights, cfg.allow_download)
    per_call = min(3.0, timeout_s)
    fr = bool(cfg.fr_models())
    within(timeout_s, f"reference_root {cfg.reference_root!r}", lambda: check_references(
        cfg.reference_root if fr else None, per_call), ConfigError, _SOURCE_FIX)
    within(timeout_s, f"source {cfg.source!r}", lambda: check_source(
        cfg.source, cfg.extensions, cfg.recursive, cfg.sniff_extensionless, fr, per_call), SourceError, _SOURCE_FIX)
    within(timeout_s, f"output {cfg.out!r}", lambda: check_output(cfg.out, per_call), OutputError,
           "pass --out a folder or URL that answers")
