"""Bounded read-ahead: a thread pool fetches bytes while the previous batch is scored.

Transient storage errors (timeouts, throttling, dropped connections) are retried with
exponential backoff; a missing file or a permission error is final and becomes an error row.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import fsspec

T = TypeVar("T")

# Errors that retrying cannot fix.
_FINAL_ERRORS: tuple[type[BaseException], ...] = (
    FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, ValueError,
)


@dataclass
class Fetched:
    uri: str
    data: bytes | None
    error: str | None
    read_ms: float


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    base_delay: float = 0.2
    max_delay: float = 5.0

    def delay(self, attempt: int) -> float:
        # Full jitter keeps many workers from retrying in lock-step against a throttled store.
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))


DEFAULT_RETRY = RetryPolicy()


def with_retries(fn: Callable[[], T], policy: RetryPolicy = DEFAULT_RETRY) -> T:
    """Call ``fn``; retry transient failures up to ``policy.attempts`` times in all."""
    for attempt in range(policy.attempts):
        try:
            return fn()
        except _FINAL_ERRORS:
            raise
        except Exception:
            if attempt == policy.attempts - 1:
                raise
            time.sleep(policy.delay(attempt))
    raise AssertionError("unreachable")  # pragma: no cover


def _read(uri: str) -> bytes:
    with fsspec.open(uri, "rb") as fh:
        return fh.read()


def fetch(uri: str, policy: RetryPolicy = DEFAULT_RETRY) -> Fetched:
    t0 = time.perf_counter()
    try:
        data = with_retries(lambda: _read(uri), policy)
        return Fetched(uri, data, None, (time.perf_counter() - t0) * 1e3)
    except Exception as exc:  # missing file, permissions, persistent network trouble: a row, not a crash
        return Fetched(uri, None, f"{type(exc).__name__}: {exc}", (time.perf_counter() - t0) * 1e3)


def prefetch(uris: Iterable[str], window: int = 8, policy: RetryPolicy = DEFAULT_RETRY) -> Iterator[Fetched]:
    """Yield fetched files in input order with at most ``window`` reads in flight (bounded memory)."""
    pending: deque[Future[Fetched]] = deque()
    with ThreadPoolExecutor(max_workers=window, thread_name_prefix="iqaflow-read") as pool:
        for uri in uris:
            pending.append(pool.submit(fetch, uri, policy))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
