"""Faults: transient storage errors are retried; a killed flow process resumes to the same dataset."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import fsspec
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from iqaflow.schemas.results import Col, ErrorCode
from iqaflow.tasks.io.read import RetryPolicy, prefetch
from iqaflow.tasks.io.storage import atomic_write
from iqaflow.tasks.score.shard import score_members


class FlakyFS(MemoryFileSystem):
    """Memory filesystem whose first ``failures`` opens/writes of each path raise a transient error."""

    protocol = "flaky"
    failures = 2
    calls: dict[str, int] = {}

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        return MemoryFileSystem._strip_protocol(path.removeprefix("flaky://"))

    def _maybe_fail(self, path: str) -> None:
        n = FlakyFS.calls.get(path, 0)
        FlakyFS.calls[path] = n + 1
        if n < FlakyFS.failures:
            raise ConnectionError(f"injected transient failure {n + 1} for {path}")

    def _open(self, path, mode="rb", **kw):  # noqa: ANN001, ANN003, ANN202
        self._maybe_fail(self._strip_protocol(path))
        return super()._open(path, mode, **kw)

    def pipe_file(self, path, value, **kw):  # noqa: ANN001, ANN003, ANN201
        self._maybe_fail(self._strip_protocol(path))
        return super().pipe_file(path, value, **kw)


fsspec.register_implementation("flaky", FlakyFS, clobber=True)
FAST = RetryPolicy(attempts=4, base_delay=0.001, max_delay=0.01)


@pytest.fixture
def flaky(collection: Path) -> list[str]:
    FlakyFS.calls.clear()
    FlakyFS.failures = 2
    plain = MemoryFileSystem()  # shares the in-memory store with FlakyFS, without the faults
    uris = []
    for p in sorted((collection / "astronaut").glob("*.png"))[:5]:
        plain.pipe_file(f"/flaky/{p.name}", p.read_bytes())
        uris.append(f"flaky:///flaky/{p.name}")
    return uris


def test_transient_read_errors_are_retried(flaky: list[str]) -> None:
    fetched = list(prefetch(flaky, window=3, policy=FAST))
    assert [f.uri for f in fetched] == flaky
    assert all(f.error is None and f.data for f in fetched)
    assert all(FlakyFS.calls[u.removeprefix("flaky://")] == 3 for u in flaky)  # 2 failures + 1 success


def test_persistent_errors_become_read_error_rows(flaky: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from iqaflow.models.registry import create_scorer
    from iqaflow.tasks.io import read

    FlakyFS.failures = 100
    monkeypatch.setattr(read, "DEFAULT_RETRY", FAST)
    monkeypatch.setattr(read.fetch, "__defaults__", (FAST,))
    table = score_members(flaky, [None] * len(flaky), [create_scorer("sharpness")], "s0", window=2)
    assert table.num_rows == len(flaky)
    assert set(table[Col.ERROR_CODE].to_pylist()) == {ErrorCode.READ_ERROR.value}
    assert "injected transient failure" in table[Col.ERROR_MESSAGE][0].as_py()


def test_transient_write_errors_are_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    from iqaflow.tasks.io import read

    monkeypatch.setattr(read.with_retries, "__defaults__", (FAST,))
    FlakyFS.calls.clear()
    FlakyFS.failures = 3
    fs = FlakyFS()
    atomic_write(fs, "/out/part-x.parquet", b"payload")
    assert MemoryFileSystem().cat_file("/out/part-x.parquet") == b"payload"
    assert FlakyFS.calls["/out/part-x.parquet"] > FlakyFS.failures  # failed 3 times, then written


def _cli(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "iqaflow", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)


@pytest.mark.slow
def test_killed_flow_resumes_to_the_uninterrupted_dataset(collection: Path, tmp_path: Path) -> None:
    from conftest import wait_until

    common = ["--workers", "1", "--shard-size", "8", "--batch-size", "4", "--run-id", "r1"]
    interrupted = tmp_path / "interrupted"
    proc = _cli(["score", str(collection), "--out", str(interrupted), *common])
    results = interrupted / "runs" / "r1" / "results"
    wait_until(lambda: len(list(results.glob("part-*.parquet"))) >= 2 or proc.poll() is not None, 240,
               "two committed shards", interval=0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the flow, its Dask workers and its Prefect server
    proc.wait(timeout=30)
    done_before = len(list(results.glob("part-*.parquet")))
    assert 2 <= done_before < 27

    resumed = _cli(["score", str(collection), "--out", str(interrupted), *common])
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out.decode()[-2000:]
    assert f"({done_before} already done)" in " ".join(out.decode().split())

    clean = _cli(["score", str(collection), "--out", str(tmp_path / "clean"), *common])
    out, _ = clean.communicate(timeout=300)
    assert clean.returncode == 0, out.decode()[-2000:]

    cols = [Col.IMAGE_ID, Col.URI, Col.STATUS, Col.ERROR_CODE, Col.CONTENT_HASH, Col.SHARD_ID,
            "sharpness", "exposure", "noise"]
    a = pq.read_table(results, columns=cols).sort_by(Col.URI)
    b = pq.read_table(tmp_path / "clean" / "runs" / "r1" / "results", columns=cols).sort_by(Col.URI)
    assert a.num_rows == 213 and a.equals(b)
