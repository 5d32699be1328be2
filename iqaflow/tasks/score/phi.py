"""PHI safety for medical runs: keyed image ids and paths that name their patient.

What iqaflow writes about a DICOM file (results, summary, logs, MLflow, reports) is limited to
non-identifying attributes (modality, photometric interpretation, frames, bit depth) and scores:
``decode_dicom`` never parses the rest. Two things still need care, handled here:

* Identity. A medical image's ``image_id`` is HMAC-SHA256 (truncated to 128 bits) of its
  SOPInstanceUID and path under a secret key, so ids are stable across runs yet cannot be reversed
  or recomputed from a UID list without the key. The key comes from ``$IQAFLOW_PHI_KEY``, else
  from ``<out>/phi.key`` (32 random bytes, hex, created on first use with mode 0600). Keep that file
  with the outputs you control; share results without it. On an object store two workers could
  both create it at once: set ``$IQAFLOW_PHI_KEY`` (or create the file) before remote runs.
* Paths. The ``uri`` column must stay a real path: routing moves and copies by it. When a DICOM's
  own patient name or ID appears in its path, the row gets ``PHI_IN_PATH`` (so an intake gate can
  quarantine it) and a warning that names the image id only. De-identify file names before intake
  (e.g. name files by a study pseudonym or the keyed id).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import threading
from collections.abc import Sequence

from iqaflow.tasks.io.storage import is_local, join, open_fs

KEY_ENV = "IQAFLOW_PHI_KEY"
KEY_FILE = "phi.key"
ID_HEX_CHARS = 32

_keys: dict[str, bytes] = {}
_lock = threading.Lock()


def keyed_id(key: bytes, instance_uid: str | None, uri: str) -> str:
    """The image id of a medical file: HMAC-SHA256(key, SOPInstanceUID NUL uri), 32 hex characters."""
    message = f"{instance_uid or ''}\x00{uri}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:ID_HEX_CHARS]


def _read_or_create(home: str) -> bytes:
    fs, root = open_fs(home)
    path = join(root, KEY_FILE)
    if is_local(fs):
        os.makedirs(root, exist_ok=True)
        try:  # O_EXCL: of several workers starting together exactly one writes the key
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
        with open(path) as fh:
            text = fh.read().strip()
    else:
        if not fs.exists(path):
            fs.pipe_file(path, secrets.token_hex(32).encode())
        text = fs.cat_file(path).decode().strip()
    if len(text) < 32:
        raise ValueError(f"PHI key file {path!r} holds {len(text)} characters; expected 64 hex characters. "
                         f"Fix: delete it to have a new key made, or set ${KEY_ENV}")
    return text.encode()


def resolve_key(home: str | None) -> bytes:
    """The HMAC key: ``$IQAFLOW_PHI_KEY``, else ``<home>/phi.key`` (made on first use), else a per-process key."""
    env = os.environ.get(KEY_ENV, "").strip()
    if env:
        return env.encode()
    cache = home or ""
    with _lock:
        if cache not in _keys:
            _keys[cache] = _read_or_create(home) if home else secrets.token_bytes(32)
        return _keys[cache]


def path_names_patient(uri: str, tokens: Sequence[str]) -> bool:
    """True if a patient token (name part or ID) stands as a whole word anywhere in ``uri`` (any case)."""
    text = uri.lower()
    for tok in tokens:
        t = tok.lower().strip()
        if len(t) >= 3 and re.search(rf"(?<![a-z0-9]){re.escape(t)}(?![a-z0-9])", text):
            return True
        for sep in (" ", "_", "-", ".", ""):  # "DOE^JANE" written as doe_jane, doe-jane, doejane...
            if "^" in t and re.search(rf"(?<![a-z0-9]){re.escape(t.replace('^', sep))}(?![a-z0-9])", text):
                return True
    return False
