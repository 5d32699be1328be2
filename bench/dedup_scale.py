"""Scale of the duplicate pass: 1,000,000 synthetic 64-bit hashes with planted groups, on this machine.

    .venv/bin/python bench/dedup_scale.py [--n 1000000] [--threads 1 2] [--default-rule]

``--default-rule`` adds one run per thread count with the runs' default rule (fingerprints.NEAR_RULE:
phash <= 14, dhash <= 20, chroma_hash <= 7; dhash and chroma_hash planted within their radii of the
base like phash, and 5% of rows grayscale, chroma_hash 0, which the colour check lets through). The 2
cores are shared: check ``uptime`` first, timings taken beside another job are not the pass's own.

The grouping runs in a child process so its peak RSS (ru_maxrss) is the pass's own. Planted groups:
a random base hash and 1-5 members, each the base with u ~ U{0..r} distinct bits flipped (so every
member is within r of its base, and members may be up to 2r apart); 1% of rows are exact copies
(same pixel_hash and phash) of another row. Prints time, peak memory, recall of planted pairs, groups
made only of background hashes (random hashes that really are within the radius: their expected
count is printed beside), group diameters (chaining), and an estimate for 100 million hashes on a
cluster from the measured per-partition cost. Saves bench/results/dedup_scale.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import time
from math import comb
from pathlib import Path

import numpy as np
import pyarrow as pa

RADIUS = 10
RESULTS = Path(__file__).parent / "results" / "dedup_scale.json"


def _flips(rng: np.random.Generator, count: int, radius: int) -> np.ndarray:
    """``count`` masks of u ~ U{0..radius} distinct random bits each."""
    flips = np.zeros(count, dtype=np.uint64)
    bits = np.uint64(1) << np.arange(64, dtype=np.uint64)
    nflip = rng.integers(0, radius + 1, count)
    keys = rng.random((count, 64)).argsort(axis=1)  # random distinct bit positions per member
    for j in range(radius):
        flips |= np.where(nflip > j, bits[keys[:, j]], np.uint64(0))
    return flips


def synthetic(n: int, seed: int = 0, radius: int = RADIUS, dhash_radius: int | None = None,
              chroma_radius: int | None = None) -> tuple[pa.Table, np.ndarray]:
    """The table, and the planted group of each row (-1: background). With ``dhash_radius`` a dhash
    column is planted the same way (members within that radius of their base's dhash); with
    ``chroma_radius`` a chroma_hash column too, 0 (grayscale: no colour evidence) on 5% of rows."""
    rng = np.random.default_rng(seed)
    h = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, n, dtype=np.int64).view(np.uint64)
    planted = np.full(n, -1, dtype=np.int64)
    sizes = rng.integers(2, 7, n // 40)  # ~10% of rows in planted groups
    rows = rng.permutation(n)[: sizes.sum()]
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    group = np.repeat(np.arange(sizes.size), sizes)
    base_row = rows[np.repeat(starts, sizes)]
    is_member = rows != base_row
    flips = _flips(rng, rows.size, radius)
    h[rows[is_member]] = h[base_row[is_member]] ^ flips[is_member]
    d = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, n, dtype=np.int64).view(np.uint64)
    if dhash_radius is not None:
        d[rows[is_member]] = d[base_row[is_member]] ^ _flips(rng, rows.size, dhash_radius)[is_member]
    c = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, n, dtype=np.int64).view(np.uint64)
    if chroma_radius is not None:
        c[rows[is_member]] = c[base_row[is_member]] ^ _flips(rng, rows.size, chroma_radius)[is_member]
        c[rng.random(n) < 0.05] = 0
    planted[rows] = group
    pixel = rng.integers(0, 2**62, n).astype(np.uint64)
    copies = rng.choice(np.flatnonzero(planted < 0), n // 100, replace=False)  # keep planted bases intact
    source = rng.choice(n, copies.size)
    fresh = planted[source] < 0  # a copy of a background row plants a group of its own
    planted[source[fresh]] = sizes.size + np.arange(int(fresh.sum()))
    h[copies], d[copies], pixel[copies], planted[copies] = h[source], d[source], pixel[source], planted[source]
    c[copies] = c[source]
    table = pa.table({
        "image_id": pa.array([f"img{i:07d}" for i in range(n)]),
        "uri": pa.array([f"s3://bucket/img{i:07d}.jpg" for i in range(n)]),
        "status": pa.array(["ok"] * n),
        "width": rng.integers(200, 4000, n).astype(np.int32),
        "height": rng.integers(200, 4000, n).astype(np.int32),
        "pixel_hash": pa.array([f"{x:032x}" for x in pixel.tolist()]),
        "phash": h.view(np.int64),
        "dhash": d.view(np.int64),
        **({"chroma_hash": c.view(np.int64)} if chroma_radius is not None else {}),
        "iqaflow_nr": rng.random(n),
    })
    return table, planted


def _run(n: int, threads: int, queue: mp.Queue, rule: dict[str, int] | None = None) -> None:
    from iqaflow.tasks.collection.dedup import group_duplicates

    rule = rule or {"phash": RADIUS}
    table, planted = synthetic(n, radius=rule["phash"], dhash_radius=rule.get("dhash"),
                               chroma_radius=rule.get("chroma_hash"))
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0, cpu0 = time.perf_counter(), time.process_time()
    out = group_duplicates(table, rule, threads=threads)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0  # cpu: all threads, any contention
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    group = out.column("dup_group").to_numpy(zero_copy_only=False)
    group = np.where(np.isnan(group), -1, group) if group.dtype.kind == "f" else group
    h = table.column("phash").to_numpy().view(np.uint64)
    distance = out.column("dup_distance").to_numpy(zero_copy_only=False)
    queue.put({"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": peak, "rss_after_data_mb": base_rss, "rule": rule,
               **quality(group.astype(np.int64), planted, h, distance, rule["phash"])})


def quality(group: np.ndarray, planted: np.ndarray, h: np.ndarray, distance: np.ndarray, radius: int = RADIUS) -> dict:
    """Recall of planted pairs, groups of background only, and group diameters."""
    n = group.size
    out = {}
    # planted pairs: every pair of rows in one planted group (base-member pairs are within r by construction)
    order = np.argsort(planted, kind="stable")
    p, g = planted[order], group[order]
    found = total = 0
    t = 1
    while True:
        same = (p[:-t] == p[t:]) & (p[:-t] >= 0)
        if not same.any():
            break
        total += int(same.sum())
        found += int((same & (g[:-t] == g[t:]) & (g[:-t] != -1)).sum())
        t += 1
    out["planted_pairs"] = total
    out["recall_planted_pairs"] = found / max(total, 1)
    in_group = group != -1
    gid, inv = np.unique(group[in_group], return_inverse=True)
    has_planted = np.zeros(gid.size, dtype=bool)
    has_planted[inv[planted[in_group] >= 0]] = True
    out["groups"] = int(gid.size)
    out["groups_without_planted_rows"] = int((~has_planted).sum())
    bg = int((planted < 0).sum())
    p_within = sum(comb(64, i) for i in range(radius + 1)) / 2.0**64
    out["expected_background_pairs_within_radius"] = bg * (bg - 1) / 2 * p_within
    kinds = np.zeros(gid.size, dtype=np.int64)  # planted groups per output group
    pairs = np.unique(np.c_[inv[planted[in_group] >= 0], planted[in_group][planted[in_group] >= 0]], axis=0)
    np.add.at(kinds, pairs[:, 0], 1)
    out["groups_merging_planted_groups"] = int((kinds > 1).sum())
    # diameter: max pairwise Hamming distance inside each output group
    rows = np.flatnonzero(in_group)
    order = rows[np.argsort(group[rows], kind="stable")]
    gs, hs = group[order], h[order]
    seg = np.r_[0, np.flatnonzero(gs[1:] != gs[:-1]) + 1]
    diam = np.zeros(order.size, dtype=np.int64)
    t = 1
    while True:
        same = gs[:-t] == gs[t:]
        if not same.any():
            break
        d = np.where(same, np.bitwise_count(hs[:-t] ^ hs[t:]), 0)
        np.maximum.at(diam, np.arange(d.size), d)
        t += 1
    group_diam = np.maximum.reduceat(diam, seg) if seg.size else np.zeros(0, np.int64)
    out["diameter"] = {"p50": float(np.percentile(group_diam, 50)), "p99": float(np.percentile(group_diam, 99)),
                       "max": int(group_diam.max()), "share_above_radius": float((group_diam > radius).mean())}
    dist = distance[~np.isnan(distance)] if distance.dtype.kind == "f" else distance
    out["max_distance_to_kept"] = int(dist.max()) if dist.size else 0
    out["rows"] = n
    return out


def partition_cost(total: int = 100_000_000, records: int = 1_000_000, reps: int = 5) -> float:
    """Seconds for a shuffled partition of ``records`` records of one band, at the bucket density of ``total``.

    A partition holds whole buckets, each with total / 2^k hashes on average; drawing the band bits
    from a pool of that many fewer values reproduces the random candidate pairs it has to reject.
    """
    from iqaflow.tasks.collection.lsh import band_edges, plan_bands

    rng = np.random.default_rng(1)
    plan = plan_bands(RADIUS, total)
    seconds = 0.0
    for mask in plan.masks[:reps]:
        h = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, records, dtype=np.int64).view(np.uint64)
        pool = h[: max(1, int(records * 2.0**plan.k / total))]
        h = (h & ~mask) | (pool[rng.integers(0, pool.size, records)] & mask)
        t0 = time.perf_counter()
        band_edges(np.arange(records), h[None], np.array([RADIUS]), mask, plan.k)
        seconds += time.perf_counter() - t0
    return seconds / reps


def estimate_100m(per_record_s: float, workers: tuple[int, ...] = (16, 64, 256)) -> dict:
    from iqaflow.tasks.collection.dedup_dask import RECORD_BYTES
    from iqaflow.tasks.collection.lsh import plan_bands

    n = 100_000_000
    plan = plan_bands(RADIUS, n)
    records = plan.bands * n
    per_task = 4_000_000  # dedup_dask's records_per_task
    return {
        "label": "ESTIMATE (arithmetic from the measured per-partition cost, not a run)",
        "plan": {"k": plan.k, "bands": plan.bands, "miss_at_radius": plan.miss()},
        "records_shuffled": records,
        "shuffle_bytes": records * RECORD_BYTES,
        "partitions_of_4M_records": -(-records // per_task),
        "memory_per_worker_gb": 3 * per_task * RECORD_BYTES / 1e9,  # map output + shuffle buffer + partition
        "core_seconds_verify": records * per_record_s,
        "minutes_at_workers": {w: records * per_record_s / w / 60 for w in workers},
        "note": "compute only; the shuffle moves shuffle_bytes over the network on top of it",
        "alternative_without_shuffle": {
            "what": "broadcast the 8-byte hash column to every worker, split the bands between workers",
            "memory_per_worker_gb": n * 8 * 4 / 1e9,  # hashes + sort order + gathered copy
            "minutes_at_workers": {w: records * per_record_s / w / 60 for w in workers},
        },
    }


def _child(n: int, threads: int, rule: dict[str, int] | None = None) -> dict:
    """One grouping in a fresh (spawned) process, so its peak RSS is its own."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_run, args=(n, threads, queue, rule))
    child.start()
    got = queue.get()
    child.join()
    return got


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="one run (child process) per value")
    parser.add_argument("--default-rule", action="store_true",
                        help="also time the runs' default rule (fingerprints.NEAR_RULE)")
    args = parser.parse_args()
    load = os.getloadavg()  # 1-minute load above ~0.5 means another job shares the 2 cores
    runs = [{"threads": threads, **_child(args.n, threads)} for threads in args.threads]
    timing = ("threads", "seconds", "cpu_seconds", "peak_rss_mb", "rss_after_data_mb")
    result = {"runs": [{k: r[k] for k in timing} for r in runs]}
    result.update({k: v for k, v in runs[0].items() if k not in timing})
    from iqaflow.tasks.collection.lsh import plan_bands

    plan = plan_bands(RADIUS, args.n)
    result["plan"] = {"k": plan.k, "bands": plan.bands, "miss_at_radius": plan.miss(),
                      "miss_at_radius_minus_2": plan.miss(RADIUS - 2)}
    if args.default_rule:
        from iqaflow.models.fingerprints import NEAR_RULE

        keep = ("rule", "seconds", "cpu_seconds", "peak_rss_mb", "recall_planted_pairs", "groups_without_planted_rows",
                "groups_merging_planted_groups")
        rp = plan_bands(NEAR_RULE["phash"], args.n)
        result["default_rule_runs"] = []
        for threads in args.threads:
            got = _child(args.n, threads, dict(NEAR_RULE))
            result["default_rule_runs"].append({"threads": threads, **{k: got[k] for k in keep}})
        result["default_rule_plan"] = {"k": rp.k, "bands": rp.bands, "miss_at_radius": rp.miss()}
    per_partition = partition_cost()
    result["partition_1M_records_seconds"] = per_partition
    result["estimate_100M"] = estimate_100m(per_partition / 1_000_000)
    threads = " ".join(map(str, args.threads))
    flag = " --default-rule" if args.default_rule else ""
    result["load_average_at_start_and_end"] = [load[0], os.getloadavg()[0]]
    result["command"] = f".venv/bin/python bench/dedup_scale.py --n {args.n} --threads {threads}{flag}"
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
