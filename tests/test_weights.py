"""Weights store: sha256 checks, clear errors, remote stores copied to a local cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from iqaflow.errors import WeightsError
from iqaflow.models.base import WeightSpec
from iqaflow.models.weights import WeightsStore, sha256_file


def test_put_and_load_roundtrip(tmp_path: Path) -> None:
    store = WeightsStore(str(tmp_path))
    state = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    digest = store.put_state_dict("tiny.pt", state)
    assert store.manifest()["tiny.pt"] == digest == sha256_file(tmp_path / "tiny.pt")
    loaded = store.load_state_dict(WeightSpec("tiny.pt"))
    assert torch.equal(loaded["w"], state["w"])
    assert store.status(WeightSpec("tiny.pt", digest)) == "ready"


def test_missing_file_error_names_file_and_fix(tmp_path: Path) -> None:
    store = WeightsStore(str(tmp_path))
    with pytest.raises(WeightsError) as exc:
        store.local_path(WeightSpec("nope.pt", "0" * 64))
    assert "nope.pt" in str(exc.value) and "IQAFLOW_WEIGHTS" in str(exc.value)
    assert store.status(WeightSpec("nope.pt")) == "missing"


def test_tampered_file_is_refused(tmp_path: Path) -> None:
    store = WeightsStore(str(tmp_path))
    store.put_state_dict("m.pt", {"w": torch.zeros(3)})
    (tmp_path / "m.pt").write_bytes(b"tampered")
    with pytest.raises(WeightsError, match="sha256"):
        store.local_path(WeightSpec("m.pt"))
    assert store.status(WeightSpec("m.pt")) == "mismatch"
    pinned = WeightSpec("m.pt", "f" * 64)
    with pytest.raises(WeightsError, match="expected f+"):
        store.local_path(pinned)


def test_remote_store_via_fsspec_memory_filesystem() -> None:
    store = WeightsStore("memory://iqaflow-weights-test")
    store.put_state_dict("r.pt", {"w": torch.ones(2)})
    local = store.local_path(WeightSpec("r.pt"))
    assert local.is_file()
    assert torch.equal(store.load_state_dict(WeightSpec("r.pt"))["w"], torch.ones(2))


def test_bad_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="plain file name"):
        WeightsStore(str(tmp_path)).put_bytes("../escape.pt", b"x")
