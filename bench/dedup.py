"""Which perceptual hashes and Hamming radii find near duplicates (issue 20); writes bench/results/dedup.json.

Tuning set: variants of Kodak (24) and clive-subset (400), plus look-alike crops (tests/dupkit.py). It holds
same-scene look-alikes too (CLIVE's 644/645 sunset and 822/823 party shots), the kind of negative that
breaks global hashes. Every candidate rule (one hash within r, or two hashes each within their radius) is
scored there, and the shipped rule is chosen there among (phash <= r1, dhash <= r2, chroma_hash <= r3 or
no colour check; r1 <= 15, the band radius the 1M-hash time goal affords), chroma_hash being the
verification stage (abstains when either image is grayscale): the highest worst-transformation recall
over dupkit.NEAR whose pairwise precision stays >= 0.995 in 95% of bootstrap resamples of the tuning
originals (a look-alike pair of originals costs up to 11 x 11 false pairs, so the point precision of one
set says little about another; the resampled 5th percentile does),
then the smallest radii. The chosen rule is then only REPORTED on variants of a seeded sample of
BIQ2021-test (held out), next to cleanvision's near-duplicate finder on the same files (installed aside:
pip install --target /tmp/benchdeps_cv cleanvision; never an iqaflow dependency).

    .venv/bin/python bench/dedup.py [--heldout 300] [--seed 0] [--work /tmp/iqaflow-dedup-bench]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO / "tests"))

import dupkit  # noqa: E402

from iqaflow.models import fingerprints as fp  # noqa: E402
from iqaflow.tasks.decode import decode  # noqa: E402


def ahash(base: np.ndarray) -> int:
    """8x8 block means above their median: what imagehash's Haar wHash reduces to (its LL band)."""
    small = cv2.resize(base, (8, 8), interpolation=cv2.INTER_AREA)
    return fp.bits_to_int(small > np.median(small))


def centre_phash(base: np.ndarray, keep: float = 0.75) -> int:
    """pHash of the central ``keep`` of each side: less of what a crop removes, but its shift magnified."""
    lo = round(base.shape[0] * (1 - keep) / 2)
    return fp.phash(base[lo: base.shape[0] - lo, lo: base.shape[0] - lo])


def _tukey(n: int, alpha: float) -> np.ndarray:
    x = (np.arange(n) + 0.5) / n
    edge = np.minimum(x, 1 - x) / (alpha / 2)
    w = np.where(edge < 1, 0.5 * (1 - np.cos(np.pi * np.minimum(edge, 1))), 1.0)
    return np.outer(w, w)


_WIN = _tukey(32, 0.6)


def windowed_phash(base: np.ndarray) -> int:
    """pHash of the mean-removed image under a Tukey window: edges (what crops cut) weigh less."""
    g = cv2.resize(base, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float64)
    return fp.bits_to_int(fp.phash_bits((g - g.mean()) * _WIN))


_ZIGZAG = [(i, s - i) for s in range(15) for i in range(8) if 0 <= s - i < 8][1:33]


def thermo_phash(base: np.ndarray) -> int:
    """The 32 lowest AC DCT coefficients (zigzag), each as a 3-level thermometer code (2 bits)."""
    g = cv2.resize(base, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float64)
    c = fp._DCT_ROWS @ g @ fp._DCT_ROWS.T
    v = np.array([c[i, j] for i, j in _ZIGZAG])
    m = 0.5 * np.median(np.abs(v))
    return fp.bits_to_int(np.stack([v > -m, v > m], 1))


# Candidates, all from one 64x64 luma image (fingerprints.luma_base), but chroma_hash (from the pixels).
# The shipped rule uses LIBRARY only; the others are what was tried (reported, not shipped).
LIBRARY = ("phash", "dhash")
VERIFY = "chroma_hash"  # the verification hash: only a third AND term of the library rule (it abstains on 0)
CANDIDATES = {
    "phash": fp.phash,
    "dhash": fp.dhash,
    "ahash": ahash,
    "cphash": centre_phash,
    "wphash": windowed_phash,
    "tphash": thermo_phash,
}
BAND_BITS = (4, 8, 16)  # LSH band widths tried: 16, 8 or 4 bands of a 64-bit hash
MAX_R = 24
PRECISION_TARGET = 0.995
BOOTSTRAP, BOOT_QUANTILE = 200, 5  # resamples of the tuning originals; the precision percentile that must pass
MAX_R3 = 20  # chroma_hash radii tried; index MAX_R3 + 1 stands for "no colour check"
MAX_RV = 20  # phash and dhash radii tried with it (the chosen ones sit well inside)
# The band (phash) radius the 1M-hash goal affords (<= 60 s on this 2-core machine, bench/dedup_scale.py):
# LSH cost grows with it (lsh.plan_bands' model: 1.0, 1.43, 2.0 at 14, 15, 16); phash <= 14 took 40 CPU s,
# phash <= 16 took 109 CPU s (99 s on two threads), so 15 is the widest kept.
MAX_BAND_R = 15


def hash_items(items: list[dupkit.Item]) -> tuple[dict[str, np.ndarray], list[str]]:
    cols: dict[str, list[int]] = {k: [] for k in [*CANDIDATES, VERIFY]}
    exact: list[str] = []
    for it in items:
        pixels = decode(Path(it.path).read_bytes()).pixels
        base = fp.luma_base(pixels)
        for k, f in CANDIDATES.items():
            cols[k].append(f(base))
        cols[VERIFY].append(fp.chroma_hash(pixels))
        exact.append(fp.pixel_hash(pixels))
    return {k: np.array(v, dtype=np.int64) for k, v in cols.items()}, exact


def distances(h: np.ndarray) -> np.ndarray:
    return fp.hamming(h[:, None], h[None, :]).astype(np.uint8)


class Labels:
    """Index arrays of the labelled pairs: (original, variant) per transformation, and every pair outside APART."""

    def __init__(self, items: list[dupkit.Item]) -> None:
        index = {(it.source, it.transform): i for i, it in enumerate(items)}
        self.pos = {t: np.array([[index[(it.source, "original")], i] for i, it in enumerate(items)
                                 if it.transform == t]) for t in dupkit.TRANSFORMS}
        keep = np.flatnonzero(~np.isin([it.transform for it in items], dupkit.APART))
        a, b = np.triu_indices(len(keep), 1)
        self.a, self.b = keep[a], keep[b]
        ident = np.array([it.identity for it in items])
        self.truth = ident[self.a] == ident[self.b]


def dist_table(items: list[dupkit.Item], D: dict[str, np.ndarray], lab: Labels) -> dict:
    """Per hash: distance quantiles original->variant per transformation, and of unrelated pairs."""
    out = {}
    for k, d in D.items():
        row = {t: np.percentile(d[p[:, 0], p[:, 1]], [50, 95, 100]).tolist() for t, p in lab.pos.items()}
        neg = d[lab.a[~lab.truth], lab.b[~lab.truth]]
        row["unrelated_min_p0.01_p0.1_p1"] = [int(neg.min())] + np.percentile(neg, [0.01, 0.1, 1]).tolist()
        out[k] = row
    return out


def counts2d(d1: np.ndarray, d2: np.ndarray, sel: np.ndarray) -> np.ndarray:
    """Cumulative pair counts: c[r1, r2] = #pairs in sel with d1 <= r1 and d2 <= r2."""
    h = np.bincount(d1[sel].astype(np.int64) * 65 + d2[sel], minlength=65 * 65).reshape(65, 65)
    return h.cumsum(0).cumsum(1)


def search(D: dict[str, np.ndarray], lab: Labels) -> list[dict]:
    """Recall per NEAR transformation and pairwise precision of every single- and two-hash rule."""
    rules = []
    names = [k for k in D if k != VERIFY]
    for h1, h2 in [(k, k) for k in names] + list(itertools.combinations(names, 2)):
        d1, d2 = D[h1][lab.a, lab.b], D[h2][lab.a, lab.b]
        tp, fp_ = counts2d(d1, d2, lab.truth), counts2d(d1, d2, ~lab.truth)
        rec = {t: counts2d(D[h1][p[:, 0], p[:, 1]], D[h2][p[:, 0], p[:, 1]], np.ones(len(p), bool)) / len(p)
               for t, p in lab.pos.items()}
        radii = range(MAX_R + 1)
        for r1, r2 in itertools.product(radii, radii if h1 != h2 else [None]):
            j = r1 if r2 is None else r2
            n = tp[r1, j] + fp_[r1, j]
            rules.append({"rule": {h1: r1} if r2 is None else {h1: r1, h2: r2},
                          "precision": float(tp[r1, j] / n) if n else 1.0, "false_pairs": int(fp_[r1, j]),
                          "recall": {t: float(c[r1, j]) for t, c in rec.items()},
                          "min_recall_near": float(min(rec[t][r1, j] for t in dupkit.NEAR))})
    return rules


def choose(rules: list[dict], hashes: tuple[str, ...] | None = None) -> dict:
    rules = [r for r in rules if hashes is None or set(r["rule"]) <= set(hashes)]
    ok = [r for r in rules if r["precision"] >= PRECISION_TARGET] or [max(rules, key=lambda r: r["precision"])]
    return max(ok, key=lambda r: (r["min_recall_near"], -sum(r["rule"].values()), -len(r["rule"])))


def banding(H: dict[str, np.ndarray], D: dict[str, np.ndarray], lab: Labels, rule: dict[str, int]) -> dict:
    """What LSH banding costs the rule: recall of (candidate and rule) per transformation, and candidates per pair.

    A pair is a candidate when one band of ``bits`` bits of the band hash is equal (no multi-probe).
    """
    out = {}
    ok = predict(rule, D)
    for name in [k for k in rule if k != VERIFY]:
        u = H[name].view(np.uint64)
        for bits in BAND_BITS:
            bands = [(u >> np.uint64(s)) & np.uint64((1 << bits) - 1) for s in range(0, 64, bits)]

            def cand(a: np.ndarray, b: np.ndarray, bands: list[np.ndarray] = bands) -> np.ndarray:
                return np.logical_or.reduce([v[a] == v[b] for v in bands])

            rec = {t: float((cand(p[:, 0], p[:, 1]) & ok[p[:, 0], p[:, 1]]).mean()) for t, p in lab.pos.items()}
            out[f"{name}:{64 // bits}x{bits}"] = {"recall": rec, "candidate_rate": float(cand(lab.a, lab.b).mean())}
    return out


def predict(rule: dict[str, int], D: dict[str, np.ndarray]) -> np.ndarray:
    """D[VERIFY] already holds 0 where either image's chroma_hash is 0 (``verify_distances``)."""
    return np.logical_and.reduce([D[k] <= r for k, r in rule.items()])


def verify_distances(h: np.ndarray) -> np.ndarray:
    """chroma_hash distances, 0 where either image has no colour evidence (the rule's check abstains)."""
    zero = h == 0
    return np.where(zero[:, None] | zero[None, :], 0, distances(h)).astype(np.uint8)


def _cum3(d1: np.ndarray, d2: np.ndarray, d3: np.ndarray, r1: int, r2: int, r3: int) -> np.ndarray:
    """c[i, j, l] = #pairs with d1 <= i, d2 <= j, d3 <= l (distances beyond the grid are not counted)."""
    m = (d1 < r1) & (d2 < r2) & (d3 < r3)
    h = np.bincount((d1[m].astype(np.int64) * r2 + d2[m]) * r3 + d3[m], minlength=r1 * r2 * r3)
    return h.reshape(r1, r2, r3).cumsum(0).cumsum(1).cumsum(2)


def search_verified(D: dict[str, np.ndarray], lab: Labels, items: list[dupkit.Item], seed: int) -> list[dict]:
    """Every (phash <= r1, dhash <= r2, chroma_hash <= r3 or off) rule: recall per NEAR transformation,
    pairwise precision, and its 5th percentile over bootstrap resamples of the tuning originals.

    A resample draws originals with replacement; the true pairs of an original count once per draw, the
    false pairs between two originals once per pair of draws (within one original: per draw).
    """
    r1n, r2n, r3n = MAX_RV + 1, MAX_RV + 1, MAX_R3 + 2
    off = MAX_R3 + 1

    def d3(x: np.ndarray) -> np.ndarray:
        return np.minimum(x, off)  # beyond MAX_R3 only the "off" column counts the pair

    a, b = lab.a, lab.b
    d1, d2, dv = D["phash"][a, b], D["dhash"][a, b], d3(D[VERIFY][a, b])
    src = np.unique([it.source for it in items], return_inverse=True)[1]
    n_src = int(src.max()) + 1
    # true pairs per original
    t = np.flatnonzero(lab.truth)
    order = t[np.argsort(src[a[t]], kind="stable")]
    cuts = np.searchsorted(src[a[order]], np.arange(n_src + 1))
    tp_s = np.stack([_cum3(d1[order[i:j]], d2[order[i:j]], dv[order[i:j]], r1n, r2n, r3n).ravel()
                     for i, j in zip(cuts[:-1], cuts[1:], strict=True)]).astype(np.float32)
    # false pairs per pair of originals, only where some rule of the grid joins them
    f = np.flatnonzero(~lab.truth & (d1 <= MAX_RV) & (d2 <= MAX_RV))
    sa, sb = np.minimum(src[a[f]], src[b[f]]), np.maximum(src[a[f]], src[b[f]])
    keys, inv = np.unique(sa.astype(np.int64) * n_src + sb, return_inverse=True)
    order = f[np.argsort(inv, kind="stable")]
    cuts = np.searchsorted(np.sort(inv), np.arange(keys.size + 1))
    fp_k = np.stack([_cum3(d1[order[i:j]], d2[order[i:j]], dv[order[i:j]], r1n, r2n, r3n).ravel()
                     for i, j in zip(cuts[:-1], cuts[1:], strict=True)]).astype(np.float32)
    ka, kb = keys // n_src, keys % n_src
    w = np.random.default_rng(seed).multinomial(n_src, np.full(n_src, 1 / n_src), BOOTSTRAP).astype(np.float32)
    tp_b = w @ tp_s
    fp_b = np.where(ka == kb, w[:, ka], w[:, ka] * w[:, kb]) @ fp_k
    p5 = np.percentile(tp_b / np.maximum(tp_b + fp_b, 1), BOOT_QUANTILE, axis=0)
    tp, fpn = tp_s.sum(0), fp_k.sum(0)
    rec = {tr: _cum3(D["phash"][p[:, 0], p[:, 1]], D["dhash"][p[:, 0], p[:, 1]], d3(D[VERIFY][p[:, 0], p[:, 1]]),
                     r1n, r2n, r3n).ravel() / len(p) for tr, p in lab.pos.items()}
    rules = []
    for i, (r1, r2, r3) in enumerate(np.ndindex(r1n, r2n, r3n)):
        rule = {"phash": r1, "dhash": r2, **({VERIFY: r3} if r3 != off else {})}
        n = tp[i] + fpn[i]
        rules.append({"rule": rule, "precision": float(tp[i] / n) if n else 1.0, "false_pairs": int(fpn[i]),
                      f"precision_p{BOOT_QUANTILE}": float(p5[i]),
                      "recall": {tr: float(c[i]) for tr, c in rec.items()},
                      "min_recall_near": float(min(rec[tr][i] for tr in dupkit.NEAR))})
    return rules


def choose_robust(rules: list[dict], verified: bool = True) -> dict:
    """Highest worst-transformation recall whose bootstrap precision percentile clears PRECISION_TARGET,
    among rules whose band radius fits the scale goal (MAX_BAND_R)."""
    key = f"precision_p{BOOT_QUANTILE}"
    pool = [r for r in rules if (verified or VERIFY not in r["rule"]) and r["rule"]["phash"] <= MAX_BAND_R]
    ok = [r for r in pool if r[key] >= PRECISION_TARGET] or [max(pool, key=lambda r: r[key])]
    return max(ok, key=lambda r: (r["min_recall_near"], -sum(r["rule"].values()), -len(r["rule"])))


def components(same: np.ndarray) -> np.ndarray:
    """Transitive closure (what a grouping engine does with the pairwise rule): same component."""
    from scipy.sparse.csgraph import connected_components

    _, lab = connected_components(same, directed=False)
    return lab[:, None] == lab[None, :]


def cleanvision_same(items: list[dupkit.Item]) -> np.ndarray | None:
    sys.path.append("/tmp/benchdeps_cv")  # appended: the venv's numpy/Pillow win
    os.environ["TQDM_DISABLE"] = "1"
    try:
        from cleanvision import Imagelab
    except ImportError:
        return None
    paths = [it.path for it in items]
    lab = Imagelab(filepaths=paths, verbose=False)
    lab.find_issues({"exact_duplicates": {}, "near_duplicates": {}}, n_jobs=1, verbose=False)
    group = np.arange(len(paths))
    pos = {p: i for i, p in enumerate(paths)}
    for kind in ("exact_duplicates", "near_duplicates"):
        for s in lab.info[kind]["sets"]:
            ids = [pos[p] for p in s]
            group[np.isin(group, group[ids])] = group[ids[0]]
    return group[:, None] == group[None, :]


def false_sources(items: list[dupkit.Item], pairs: np.ndarray) -> dict[str, int]:
    """False pairs by the originals they come from: one look-alike pair of originals costs up to 11 x 11."""
    count: dict[str, int] = {}
    for i, j in pairs:
        key = " ~ ".join(sorted((items[i].identity, items[j].identity)))
        count[key] = count.get(key, 0) + 1
    return dict(sorted(count.items(), key=lambda kv: -kv[1]))


def _p5(rules: list[dict], rule: dict[str, int]) -> float | None:
    """The bootstrap precision percentile of ``rule`` when it is in the verified family's grid."""
    key = f"precision_p{BOOT_QUANTILE}"
    return next((r[key] for r in rules if r["rule"] == rule), None)


def fmt_rule(rule: dict[str, int]) -> str:
    return " and ".join(f"{k}<={r}" for k, r in rule.items())


def table(rows: dict[str, dict]) -> str:
    ts = list(dupkit.TRANSFORMS)
    head = f"{'':46s}" + "".join(f"{t[:9]:>10s}" for t in ts) + f"{'prec':>8s}{'falseP':>8s}"
    lines = [head]
    for name, m in rows.items():
        lines.append(f"{name[:46]:46s}" + "".join(f"{m['recall'][t]:10.3f}" for t in ts)
                     + f"{m['precision']:8.4f}{m.get('false_pairs', -1):8d}")
    return "\n".join(lines)


def speed() -> dict:
    img = np.asarray(Image.open(DATA / "kodak" / "kodim01.png").convert("RGB").resize((1024, 768))).copy()
    base = fp.luma_base(img)
    pil = Image.fromarray(img)
    try:
        import imagehash  # the reference implementation, for comparison only
    except ImportError:
        imagehash = None

    def us(f, n=200) -> float:
        f()
        t0 = time.perf_counter()
        for _ in range(n):
            f()
        return round((time.perf_counter() - t0) / n * 1e6, 1)

    return {"image": "1024x768 RGB uint8", "fingerprints_us": us(lambda: fp.fingerprints(img)),
            "pixel_hash_us": us(lambda: fp.pixel_hash(img)), "luma_base_us": us(lambda: fp.luma_base(img)),
            "phash_us": us(lambda: fp.phash(base)), "dhash_us": us(lambda: fp.dhash(base)),
            "imagehash_phash_us": us(lambda: imagehash.phash(pil), 50) if imagehash else None,
            "imagehash_dhash_us": us(lambda: imagehash.dhash(pil), 50) if imagehash else None}


def evaluate(name: str, items: list[dupkit.Item], seed: int) -> tuple[dict, dict[str, np.ndarray], Labels, list[str]]:
    t0 = time.perf_counter()
    H, exact = hash_items(items)
    print(f"{name}: {len(items)} items hashed in {time.perf_counter() - t0:.0f} s", flush=True)
    D = {k: distances(h) if k != VERIFY else verify_distances(h) for k, h in H.items()}
    return H, D, Labels(items), exact


def exact_metrics(items: list[dupkit.Item], exact: list[str]) -> dict:
    e = np.array(exact)
    return dupkit.pair_metrics(items, e[:, None] == e[None, :], ["copy"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--heldout", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path("/tmp/iqaflow-dedup-bench"))
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "dedup.json")
    ap.add_argument("--tune-only", action="store_true", help="choose the rule and stop before the held-out set")
    args = ap.parse_args()

    tune_src = sorted((DATA / "kodak").glob("*.png")) + dupkit.sample(DATA / "clive-subset" / "images", 400, 0)
    tune_src = dupkit.drop_same_photo(tune_src)
    tune = dupkit.build_set(tune_src, args.work / "tune", seed=args.seed)
    H, D, lab, exact = evaluate("tune", tune, args.seed)
    rules = search(D, lab)
    vrules = search_verified(D, lab, tune, args.seed)
    best = choose_robust(vrules)  # shipped: luma hashes + colour verification, robust precision
    pair_only = choose_robust(vrules, verified=False)  # same selection without the colour check
    previous = choose(rules, LIBRARY)  # the earlier selection: point precision >= 0.995, luma hashes only
    tried = choose(rules)
    singles = {k: choose([r for r in rules if list(r["rule"]) == [k]]) for k in D if k != VERIFY}
    print("\nTUNING (kodak + clive-subset), distances original->variant: median / p95 / max")
    dists = dist_table(tune, D, lab)
    for k, row in dists.items():
        q = "  ".join(f"{t}={v[0]:.0f}/{v[1]:.0f}/{v[2]:.0f}" for t, v in row.items() if t in dupkit.TRANSFORMS)
        print(f"  {k:8s} {q}"
              + f"  unrelated min/p.01%/p.1%/p1%={row['unrelated_min_p0.01_p0.1_p1']}")
    chosen = {"shipped": best, "pair_only": pair_only, "previous": previous, "tried": tried, **singles}
    tune_rows = {f"{fmt_rule(r['rule'])}": {**dupkit.pair_metrics(tune, predict(r["rule"], D)),
                                            f"precision_p{BOOT_QUANTILE}": _p5(vrules, r["rule"])}
                 for r in chosen.values()}
    # what the pass outputs: connected components of the rule (not part of the choice; see the README)
    tune_rows["shipped, grouped (components)"] = dupkit.pair_metrics(tune, components(predict(best["rule"], D)))
    tune_rows["earlier, grouped (components)"] = dupkit.pair_metrics(tune, components(predict(previous["rule"], D)))
    print(f"\nshipped (bootstrap p{BOOT_QUANTILE} precision >= {PRECISION_TARGET}, with and without chroma_hash), "
          f"the earlier choice (point precision >= {PRECISION_TARGET}), best of any pair and single hash, tuning set:")
    print(table(tune_rows))
    for name, r in chosen.items():
        if name in ("shipped", "pair_only", "previous"):
            print(f"  {name:10s} {fmt_rule(r['rule'])}: bootstrap p{BOOT_QUANTILE} precision "
                  f"{_p5(vrules, r['rule'])}")
    ex_tune = exact_metrics(tune, exact)
    print("exact (pixel_hash): copy recall", ex_tune["recall"]["copy"], "precision", ex_tune["precision"])
    bands = banding(H, D, lab, best["rule"])
    print(f"\nLSH banding for {fmt_rule(best['rule'])} (recall of candidate-and-rule; candidates per pair):")
    for k, v in bands.items():
        rec = " ".join(f"{t}={r:.3f}" for t, r in v["recall"].items())
        print(f"  {k:10s} {rec}  cand={v['candidate_rate']:.4f}")
    if args.tune_only:
        return

    held_src = dupkit.drop_same_photo(dupkit.sample(DATA / "biq2021-test" / "images", args.heldout, args.seed + 1))
    held = dupkit.build_set(held_src, args.work / "heldout", seed=args.seed + 1)
    Hh, Dh, labh, exacth = evaluate("held-out", held, args.seed)
    same = predict(best["rule"], Dh)
    rows = {f"iqaflow {fmt_rule(best['rule'])}": dupkit.pair_metrics(held, same),
            "iqaflow, grouped (components)": dupkit.pair_metrics(held, components(same))}
    rows[f"  without colour {fmt_rule(pair_only['rule'])}"] = dupkit.pair_metrics(held, predict(pair_only["rule"], Dh))
    rows[f"  earlier {fmt_rule(previous['rule'])}"] = dupkit.pair_metrics(held, predict(previous["rule"], Dh))
    rows[f"  tried {fmt_rule(tried['rule'])}"] = dupkit.pair_metrics(held, predict(tried["rule"], Dh))
    for r in singles.values():
        rows[f"  single {fmt_rule(r['rule'])}"] = dupkit.pair_metrics(held, predict(r["rule"], Dh))
    t0 = time.perf_counter()
    cv = cleanvision_same(held)
    if cv is not None:
        rows["cleanvision 0.3 (equal pHash)"] = dupkit.pair_metrics(held, cv)
        print(f"cleanvision ran in {time.perf_counter() - t0:.0f} s")
    print(f"\nHELD OUT (BIQ2021-test, {len(held_src)} originals, seed {args.seed + 1}), report only:")
    print(table(rows))
    ex = exact_metrics(held, exacth)
    apart = np.isin([i.transform for i in held], dupkit.APART)
    ident = np.array([i.identity for i in held])
    fps = np.argwhere(np.triu(same, 1) & (ident[:, None] != ident[None, :]) & ~apart[:, None] & ~apart[None, :])
    bands_h = banding(Hh, Dh, labh, best["rule"])
    print("exact (pixel_hash): copy recall", ex["recall"]["copy"], "precision", ex["precision"])
    print("false pairs of the shipped rule, by source pair:", false_sources(held, fps))
    sp = speed()
    print("\nspeed:", sp)
    result = {
        "chosen_rule": best["rule"], "band_on": next(iter(best["rule"])),
        "precision_target_tuning": PRECISION_TARGET, "seed": args.seed,
        "selection": f"highest worst-NEAR recall with bootstrap p{BOOT_QUANTILE} precision >= {PRECISION_TARGET} "
                     f"({BOOTSTRAP} resamples of the tuning originals) among phash <= {MAX_BAND_R} (scale goal), "
                     "dhash radii and chroma_hash radius or none",
        "without_colour_rule": pair_only["rule"], "earlier_rule": previous["rule"],
        "tuning": {"originals": len(tune_src), "items": len(tune), "distances": dists, "banding": bands,
                   "best_any_candidate": tried["rule"],
                   "rules": {k: v for k, v in tune_rows.items()}, "exact": ex_tune},
        "heldout": {"originals": len(held_src), "items": len(held), "rows": rows, "exact": ex, "banding": bands_h,
                    "false_pair_sources": false_sources(held, fps)},
        "speed": sp,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
