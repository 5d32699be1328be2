"""Bit-sampling LSH for 64-bit hashes under a Hamming radius: candidates share a band, never all pairs.

A band is ``k`` distinct bit positions drawn at random; two hashes are candidates in a band when
they agree on all its bits. A pair at Hamming distance ``d`` agrees on one band with probability
``p(d) = C(64 - d, k) / C(64, k)`` and bands are drawn independently, so it is missed by all ``b``
bands with probability ``(1 - p(d)) ** b``: this is ``miss_probability``. ``plan_bands`` takes the
smallest ``b`` that keeps the miss at the radius under ``target_miss`` and picks ``k`` to minimise
the measured cost (one pass over the items per band plus the random pairs that share a band,
about ``n^2 / 2^(k+1)`` per band). Pairs closer than the radius are missed far less often
(``miss_probability`` tells how much). On 1M hashes: phash <= 10 gives k = 16, b = 157, miss 9.8e-4
at distance 10 and 8e-7 at 8; the default rule's phash <= 14 gives k = 15, b = 487, miss 9.9e-4 at 14
(phash <= 16 would need k = 14, b = 682: 2.7x the CPU time at 1M, over the scale goal).

Bands sample the band hash only. Under an AND rule a band could also sample bits of the second hash;
for the worst pair of an earlier rule (phash 14 and dhash 17 apart) a phash bit agrees with probability
(50 - i) / (64 - i) after i phash bits and a dhash bit with 47/64, so mixing pays only past 12 phash
bits: at k = 15 the best mix (13 + 2) needs 474 bands instead of 487 (3% fewer), not worth a second
key hash in every band, the index and the Dask records.

Exact multi-index hashing was costed against this and not used: at radius 10 on 64 bits, 4 tables
of 16 bits must each be probed within 2 bits (137 probes) of buckets holding ~15 of 1M hashes, about
8,000 candidates per hash, against ~1,000 for the sampled bands; finer splits are worse.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil, comb, log

import numpy as np

from iqaflow.tasks.collection.kernel import forest_edges

HASH_BITS = 64
# Cost of one random candidate pair (key check, xor, popcount) relative to one item's share of a band's
# bucketing in the compiled kernel (kernel.py): ~2.4 ns against ~46 ns, fitted to its time per band at
# k = 15, 16, 17 on 1M hashes (2 shared cores).
_PAIR_COST = 0.05


@dataclass(frozen=True)
class BandPlan:
    """``bands`` random masks of ``k`` bits each, drawn from ``seed``; the same plan gives the same candidates."""

    radius: int
    k: int
    bands: int
    seed: int
    target_miss: float

    @property
    def masks(self) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        bits = np.uint64(1) << np.arange(HASH_BITS, dtype=np.uint64)
        out = np.empty(self.bands, dtype=np.uint64)
        for i in range(self.bands):
            out[i] = np.bitwise_or.reduce(bits[rng.choice(HASH_BITS, self.k, replace=False)])
        return out

    def miss(self, distance: int | None = None) -> float:
        """Probability that a pair at ``distance`` (default: the radius) shares no band."""
        return miss_probability(self.radius if distance is None else distance, self.k, self.bands)


def miss_probability(distance: int, k: int, bands: int) -> float:
    """(1 - C(64-d, k) / C(64, k)) ** bands: no band of k sampled bits avoids all d differing bits."""
    p = comb(HASH_BITS - distance, k) / comb(HASH_BITS, k)
    return float((1.0 - p) ** bands)


def bands_needed(radius: int, k: int, target_miss: float) -> int:
    p = comb(HASH_BITS - radius, k) / comb(HASH_BITS, k)
    if p >= 1.0:
        return 1
    return max(1, ceil(log(target_miss) / log(1.0 - p)))


def plan_bands(radius: int, n: int, target_miss: float = 1e-3, seed: int = 0, max_bands: int = 4096) -> BandPlan:
    """The cheapest (k, b) for ``n`` hashes whose miss probability at ``radius`` is <= ``target_miss``."""
    if not 0 <= radius < HASH_BITS // 2:
        raise ValueError(f"expected a Hamming radius in [0, 32) for 64-bit hashes, got {radius}")
    if not 0.0 < target_miss < 1.0:
        raise ValueError(f"expected target_miss in (0, 1), got {target_miss}")
    best: tuple[float, int, int] | None = None
    for k in range(1, HASH_BITS - radius + 1):
        b = bands_needed(radius, k, target_miss)
        if b > max_bands:
            continue
        cost = b * (n + _PAIR_COST * n * n / 2.0 ** (k + 1))
        if best is None or cost < best[0]:
            best = (cost, k, b)
    if best is None:
        raise ValueError(f"radius {radius} needs more than {max_bands} bands for miss {target_miss}; raise max_bands")
    return BandPlan(radius=radius, k=best[1], bands=best[2], seed=seed, target_miss=target_miss)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise Hamming distance of two uint64 arrays (numpy's popcount)."""
    return np.bitwise_count(a ^ b)


def as_uint64(values: np.ndarray) -> np.ndarray:
    """Signed int64 hashes (Parquet's type) reinterpreted as their uint64 bit pattern, no copy."""
    return np.ascontiguousarray(values, dtype=np.int64).view(np.uint64)


def identical_tuples(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first position of each distinct column of ``hashes`` (c, n), the distinct index of every position).

    Identical hashes are joined once, outside the bands: a thousand blank images with hash 0 would
    otherwise put half a million pairs in every band.
    """
    if hashes.shape[0] == 1:
        _, first, inverse = np.unique(hashes[0], return_index=True, return_inverse=True)
    else:
        packed = np.ascontiguousarray(hashes.T).view(np.dtype((np.void, 8 * hashes.shape[0]))).ravel()
        _, first, inverse = np.unique(packed, return_index=True, return_inverse=True)
    return first, inverse.ravel()


def band_edges(
    rows: np.ndarray, hashes: np.ndarray, radii: np.ndarray, mask: np.uint64, k: int,
    abstain: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Edges among ``rows`` (hashes (c, n)) for one band: identical tuples joined, then a spanning forest
    of the pairs within every radius from the compiled kernel (``kernel.forest_edges``, the plan's ``k``).
    """
    first, inverse = identical_tuples(hashes)
    same = first[inverse] != np.arange(rows.size)
    a, b = forest_edges(np.ascontiguousarray(hashes[:, first].T), radii, np.array([mask], np.uint64), k, abstain)
    return np.concatenate([rows[same], rows[first][a]]), np.concatenate([rows[first[inverse[same]]], rows[first][b]])
