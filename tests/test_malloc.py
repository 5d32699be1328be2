"""Worker processes keep freed image buffers in the heap between images and hand them back between
shards (iqaflow.tasks.score.malloc).

Checked through glibc's own accounting (mallinfo2: hblks = live mmap'd blocks) and the process's
resident pages, in a child process started with the environment Dask gives its workers; no timing.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from typing import Any

import pytest

glibc_only = pytest.mark.skipif(platform.system() != "Linux" or not platform.libc_ver()[0] == "glibc",
                                reason="glibc only")

LIBC = r"""
import ctypes, json, os
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
"""

MMAP_CHILD = LIBC + r"""
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]
libc.mallinfo2.restype = MallInfo2
def mmapped_while_held(n=4 << 20):
    before = libc.mallinfo2().hblks
    buf = libc.malloc(n)
    during = libc.mallinfo2().hblks
    libc.free(buf)
    return during - before
from iqaflow.tasks.score.malloc import keep_freed_memory
out = {"before": mmapped_while_held()}
out["tuned"] = keep_freed_memory()
out["after"] = mmapped_while_held()
out["again"] = keep_freed_memory()
print(json.dumps(out))
"""

RELEASE_CHILD = LIBC + r"""
def rss_mb():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
from iqaflow.tasks.score.malloc import keep_freed_memory, release_freed_memory
keep_freed_memory()
bufs = [libc.malloc(1 << 20) for _ in range(100)]
for b in bufs:
    ctypes.memset(b, 1, 1 << 20)  # touch every page: now resident
held = rss_mb()
for b in bufs:
    libc.free(b)
kept = rss_mb()  # below the trim threshold: the heap keeps them
released = release_freed_memory()
print(json.dumps({"held": held, "kept": kept, "after": rss_mb(), "released": released}))
"""


def run_like_a_dask_worker(code: str) -> dict[str, Any]:
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536"}  # what Dask's nanny sets for its workers
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


@glibc_only
def test_a_dask_like_environment_stops_mmapping_image_sized_buffers() -> None:
    assert run_like_a_dask_worker(MMAP_CHILD) == {"before": 1, "tuned": True, "after": 0, "again": True}


@glibc_only
def test_release_hands_a_shards_freed_buffers_back_to_the_os() -> None:
    out = run_like_a_dask_worker(RELEASE_CHILD)
    assert out["released"] is True
    assert out["kept"] > out["held"] - 10  # 100 MB freed but still resident (MB, page-size granularity)
    assert out["after"] < out["kept"] - 80  # at least 80 of the 100 MB returned
