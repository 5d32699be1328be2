"""Bounded read-ahead: a thread pool fetches bytes while the previous batch is scored."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import fsspec


@dataclass
class Fetched:
    uri: str
    data: bytes | None
    error: str | None
    read_ms: float


def _fetch(uri: str) -> Fetched:
    t0 = time.perf_counter()
    try:
        with fsspec.open(uri, "rb") as fh:
            data = fh.read()
        return Fetched(uri, data, None, (time.perf_counter() - t0) * 1e3)
    except Exception as exc:  # missing file, permissions, network: a row, not a crash
        return Fetched(uri, None, f"{type(exc).__name__}: {exc}", (time.perf_counter() - t0) * 1e3)


def prefetch(uris: Iterable[str], window: int = 8) -> Iterator[Fetched]:
    """Yield fetched files in input order with at most ``window`` reads in flight (bounded memory)."""
    pending: deque[Future[Fetched]] = deque()
    with ThreadPoolExecutor(max_workers=window, thread_name_prefix="iqaflow-read") as pool:
        for uri in uris:
            pending.append(pool.submit(_fetch, uri))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
