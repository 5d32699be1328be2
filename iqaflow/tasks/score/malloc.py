"""Keep freed image buffers in the process heap instead of returning them to the OS after every image.

Dask starts worker processes with ``MALLOC_TRIM_THRESHOLD_=65536`` (its default
``distributed.nanny.pre-spawn-environ``). Setting any glibc malloc threshold switches off glibc's
adaptive mmap threshold, so every array above 128 KiB (a decoded photo, each float plane of a scorer) is
mmap'd, page-faulted in and munmap'd again: measured here, the default scorers ran at half the speed
of the same code in a plain process (15 vs 28 images/s at 1024x768). Raising both thresholds at run time
(``mallopt``) restores it (33 images/s) for any worker, local cluster or ``dask worker`` started by a user.
Memory stays bounded: at most TRIM_THRESHOLD of free heap is kept per malloc arena, and
``release_freed_memory`` hands all of it back between shards (measured: 340 MB per worker).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 << 20  # glibc's largest: allocations below it come from the heap and are reused
TRIM_THRESHOLD = 128 << 20  # free heap above this is returned to the OS
_done = False


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (once); False where libc is not glibc."""
    global _done
    if _done:
        return True
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:  # musl, macOS, Windows: no mallopt, nothing to tune
        return False
    ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if not ok:
        log.debug("mallopt refused the thresholds; leaving malloc as it is")
    _done = ok
    return ok


def release_freed_memory() -> bool:
    """Return the free heap of every malloc arena to the OS (glibc's malloc_trim); False where there is none.

    Called once per shard: an idle worker then holds its live memory only, not the last shard's
    free buffers; re-faulting them once per 500 images measured no slower.
    """
    trim = getattr(_libc(), "malloc_trim", None)
    return bool(trim(0)) if trim is not None else False
