"""Compiled band pass (numba): per band a counting sort of the keys, then pairs inside each bucket.

numpy needs ~10 passes over a band's 1M items (two radix sorts, gathers, one pass per offset in a
bucket): ~450 ms a band at the default rule's 965 bands. Here a band is one pass to bucket the keys,
one scatter and one sweep of the buckets (only the band hash is moved: the other hashes are read for
the rare pairs within the band hash's radius), and confirmed pairs go straight into a union-find that
records an edge only when it joins two components: the edges are a spanning forest of all confirmed
pairs, so their components are those of every pair and a pair found again in a later band costs no
memory.
"""

from __future__ import annotations

import numba as nb
import numpy as np

_MIX = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing multiplier (odd): spreads masked values
_M1, _M2, _M4 = np.uint64(0x5555555555555555), np.uint64(0x3333333333333333), np.uint64(0x0F0F0F0F0F0F0F0F)
_H01 = np.uint64(0x0101010101010101)
_ROW_MASK = (1 << 40) - 1


@nb.njit(cache=True, nogil=True, inline="always")
def _popcount(x: np.uint64) -> np.uint64:
    x = x - ((x >> np.uint64(1)) & _M1)
    x = (x & _M2) + ((x >> np.uint64(2)) & _M2)
    x = (x + (x >> np.uint64(4))) & _M4
    return (x * _H01) >> np.uint64(56)


@nb.njit(cache=True, nogil=True, inline="always")
def _find(parent: np.ndarray, i: int) -> int:
    root = i
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:  # path compression keeps later finds short
        nxt = parent[i]
        parent[i] = root
        i = nxt
    return root


@nb.njit(cache=True, nogil=True)
def _forest(hashes: np.ndarray, radii: np.ndarray, abstain: np.ndarray, masks: np.ndarray, bucket_bits: int,
            part_bits: int, fixed: int, parent: np.ndarray, out_a: np.ndarray, out_b: np.ndarray) -> int:
    n, c = hashes.shape
    band = np.ascontiguousarray(hashes[:, 0])  # only the band hash travels through the sort
    low = bucket_bits - part_bits
    shift = np.uint64(64 - bucket_bits)
    parts, local = 1 << part_bits, 1 << low
    starts = np.zeros(parts + 1, np.int64)
    keys = np.empty(n, np.int64)
    packed, p_h = np.empty(n, np.int64), np.empty(n, np.uint64)  # packed: low key bits << 40 | row
    s_idx, s_h = np.empty(n, np.int64), np.empty(n, np.uint64)
    ends = np.zeros(local + 1, np.int64)
    limit = radii.astype(np.uint64)
    edges = 0
    for mask in masks:
        # pass 1: split by the key's top bits into cache-sized partitions (few write streams)
        starts[:] = 0
        for i in range(n):
            key = np.int64(((band[i] & mask) * _MIX) >> shift)
            keys[i] = key
            starts[(key >> low) + 1] += 1
        for p in range(parts):
            starts[p + 1] += starts[p]
        cursor = starts[:-1].copy()
        for i in range(n):
            p = keys[i] >> low
            pos = cursor[p]
            cursor[p] = pos + 1
            packed[pos] = ((keys[i] & (local - 1)) << 40) | i  # one write stream fewer than two arrays
            p_h[pos] = band[i]
        # pass 2, per partition in cache: counting sort on the low bits, then pairs inside each bucket
        for p in range(parts):
            s, e = starts[p], starts[p + 1]
            if e - s < 2:
                continue
            ends[:] = 0
            for x in range(s, e):
                ends[(packed[x] >> 40) + 1] += 1
            for b in range(local):
                ends[b + 1] += ends[b]
            for x in range(s, e):
                key = packed[x] >> 40
                pos = s + ends[key]
                ends[key] += 1
                s_idx[pos] = packed[x] & _ROW_MASK
                s_h[pos] = p_h[x]
            begin = s
            for b in range(local):
                end = s + ends[b]
                for x in range(begin, end):
                    hx, hits = s_h[x], 0
                    for y in range(x + 1, end):  # branch-free, so it vectorises: almost every pair fails
                        diff = hx ^ s_h[y]
                        hits += ((diff & mask) == 0) & (_popcount(diff) <= limit[0])
                    if hits == 0:
                        continue
                    for y in range(x + 1, end):
                        diff = hx ^ s_h[y]
                        if diff & mask or _popcount(diff) > limit[0]:  # another key, or too far
                            continue
                        a, b = s_idx[x], s_idx[y]
                        if a < fixed and b < fixed:
                            continue  # both rows' grouping is given (an earlier run's index)
                        ok = True
                        for j in range(1, c):  # rare: random pairs almost never pass the band hash
                            ha, hb = hashes[a, j], hashes[b, j]
                            if abstain[j] and (ha == 0 or hb == 0):
                                continue  # no evidence on one side (a grayscale image's chroma_hash)
                            if _popcount(ha ^ hb) > limit[j]:
                                ok = False
                                break
                        if ok:
                            ra, rb = _find(parent, a), _find(parent, b)
                            if ra != rb:
                                parent[max(ra, rb)] = min(ra, rb)
                                out_a[edges] = a
                                out_b[edges] = b
                                edges += 1
                begin = end
    return edges


def bucket_bits(k: int, n: int) -> tuple[int, int]:
    """(bits of a band's bucket, bits of its pass-1 partition).

    Buckets: 4x the 2^k band values (hash collisions are rare and rejected by the key check), capped
    near n so the per-band prefix sums stay small. Partitions: ~4,000 items (row and band hash: 64 KB)
    so pass 2 runs in L2, at most 1,024 so pass 1 writes few streams.
    """
    bits = max(1, min(k + 2, int(n).bit_length() + 1))
    return bits, max(0, min(bits, 10, int(n).bit_length() - 12))


def forest_edges(hashes: np.ndarray, radii: np.ndarray, masks: np.ndarray, k: int,
                 abstain: np.ndarray | None = None, groups: np.ndarray | None = None,
                 fixed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A spanning forest of every pair sharing a band of ``hashes[:, 0]`` and within every radius.

    ``hashes``: (n, c) uint64, band hash first; ``radii``: (c,); ``masks``: the bands' bit masks;
    ``abstain``: (c,) bool, True where a 0 hash on either side passes that column's check.
    Incremental use (``index.join_new``): ``groups`` (n,) labels rows already grouped together (their
    union is the start, so no edge is spent inside a group), and pairs of two rows below ``fixed`` are
    never joined, so the edges are a spanning forest of the given groups plus every pair touching a row
    at or above ``fixed``; only the new edges come back.
    """
    n = hashes.shape[0]
    parent = np.arange(n, dtype=np.int64)
    if groups is not None and n:
        _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
        parent = first[inverse.ravel()].astype(np.int64)  # each row points at its group's first row: a root
    out_a = np.empty(max(n - 1, 0), np.int64)
    out_b = np.empty_like(out_a)
    if n < 2 or masks.size == 0:
        return out_a[:0], out_b[:0]
    skip = np.zeros(hashes.shape[1], np.bool_) if abstain is None else np.asarray(abstain, np.bool_)
    edges = _forest(np.ascontiguousarray(hashes, np.uint64), np.asarray(radii, np.int64), skip,
                    np.ascontiguousarray(masks, np.uint64), *bucket_bits(k, n), fixed, parent, out_a, out_b)
    return out_a[:edges], out_b[:edges]
