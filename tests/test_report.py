"""The HTML run report: what it shows (computed independently here) and that a real browser renders it cleanly."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageFilter

from iqaflow.schemas.results import Col, Status, results_schema

FOLDERS = ("site-a/scanner-1", "site-a/scanner-2", "site-b/s&<x>")  # the last one must come out escaped
GATES = """version: 1
name: report-test
image_rules:
  - name: readable
    require: error_code is null
    outcome: reject
  - name: sharp
    require: sharpness >= 120 and not (noise > 5)
    outcome: reject
    reason: blurry
  - name: clean
    require: 3 >= noise
    outcome: flag
"""


def make_run(root: Path, n: int = 30, seed: int = 0, shift: float = 0.0, fmt: str = "PNG") -> Path:
    """A scored-looking run over real image files: scores are set here, so expectations are exact."""
    rng = np.random.default_rng(seed)
    src = root / "src"
    rows = []
    for i in range(n):
        path = src / FOLDERS[i % 3] / f"img{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        arr = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
        Image.fromarray(arr).filter(ImageFilter.GaussianBlur(i / 10)).save(path)
        data = path.read_bytes()
        rows.append({Col.IMAGE_ID: hashlib.blake2b(str(path).encode(), digest_size=8).hexdigest(), Col.URI: str(path),
                     Col.STATUS: Status.OK.value, Col.SHARD_ID: "s", Col.CONTENT_HASH: hashlib.sha256(data).hexdigest(),
                     Col.BYTES: len(data), Col.WIDTH: 64, Col.HEIGHT: 48, Col.FORMAT: fmt,
                     "sharpness": 300.0 - 10 * i + shift, "noise": float(i % 7)})
    for name, code, data in (("empty.jpg", "EMPTY_FILE", b""), ("notes.jpg", "NOT_AN_IMAGE", b"hello")):
        path = src / "site-b" / name
        path.write_bytes(data)
        rows.append({Col.IMAGE_ID: name, Col.URI: str(path), Col.STATUS: Status.ERROR.value, Col.SHARD_ID: "s",
                     Col.ERROR_CODE: code, Col.ERROR_MESSAGE: f"{code.lower()} here"})
    return write_results(root / "runs" / "r1", rows, results_schema(["sharpness", "noise"]), src, 16)


def write_results(run: Path, rows: list[dict], schema: pa.Schema, src: Path, split: int) -> Path:
    """``run/results`` as two shards (rows before and from ``split``) and ``run/config.json`` naming ``src``."""
    table = pa.table({f.name: [r.get(f.name) for r in rows] for f in schema}, schema=schema)
    (run / "results").mkdir(parents=True)
    pq.write_table(table.slice(0, split), run / "results" / "part-a.parquet")
    pq.write_table(table.slice(split), run / "results" / "part-b.parquet")
    (run / "config.json").write_text(json.dumps({"source": str(src)}))
    return run


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(run, baseline run, gate file): the run gated for real by the gate pass (no Prefect needed)."""
    from iqaflow.models.gate_binding import prepare
    from iqaflow.tasks.gates.gate import apply_decisions, locate_run, results_schema_of

    root = tmp_path_factory.mktemp("report")
    run = make_run(root / "now")
    base = make_run(root / "before", seed=1, shift=-100.0)
    gates = root / "gates.yaml"
    gates.write_text(GATES)
    paths = locate_run(str(run))
    apply_decisions(paths, prepare(str(gates), results_schema_of(paths)))
    return run, base, gates


def test_thresholds_come_from_every_comparison_in_the_rules(gated) -> None:
    from iqaflow.schemas.gates import load_gate_file
    from iqaflow.tasks.report.build import gate_thresholds

    found = {(t.column, t.op, t.value, t.rule, t.outcome) for t in gate_thresholds(load_gate_file(str(gated[2])))}
    assert found == {("sharpness", ">=", 120.0, "blurry", "reject"), ("noise", ">", 5.0, "blurry", "reject"),
                     ("noise", "<=", 3.0, "clean", "flag")}


def test_report_data_folders_worst_errors_drift(gated) -> None:
    from iqaflow.tasks.report.build import build_report

    run, base, gates = gated
    table = pq.read_table(run / "results").to_pylist()
    data = build_report(str(run), str(gates), str(base), worst=6)
    assert data.notes == [] and data.gated and data.source_root == str(run.parent.parent / "src")
    # Per folder, counted here from the gated rows themselves.
    expected: dict[str, dict[str, int]] = {}
    for r in table:
        folder = str(Path(r[Col.URI]).parent.relative_to(run.parent.parent / "src"))
        c = expected.setdefault(folder, {"pass": 0, "flag": 0, "reject": 0, "error": 0})
        c[r[Col.GATE_STATUS]] += 1
        c["error"] += r[Col.STATUS] == Status.ERROR.value
    got = {f["folder"]: {k: f[k] for k in ("pass", "flag", "reject", "error")} for f in data.folders}
    assert got == expected and data.folders_total == 4
    assert [f["reject_rate"] for f in data.folders] == sorted((f["reject_rate"] for f in data.folders), reverse=True)
    # Worst: only readable images, rejected ones first, each with a real thumbnail.
    assert len(data.worst) == 6 and all(im.status == "reject" and im.thumb for im in data.worst)
    rejected_ok = {r[Col.URI] for r in table if r[Col.GATE_STATUS] == "reject" and r[Col.STATUS] == Status.OK.value}
    assert {im.uri for im in data.worst} <= rejected_ok
    assert {e["code"]: e["count"] for e in data.errors} == {"EMPTY_FILE": 1, "NOT_AN_IMAGE": 1}
    # Drift: sharpness moved by 100 (KS: distributions of 30 points barely overlap); noise is identical.
    drift = {d["column"]: d for d in data.drift}
    assert drift["noise"]["ks"] == 0.0 and drift["sharpness"]["ks"] > 0.3
    assert drift["sharpness"]["mean"] - drift["sharpness"]["baseline_mean"] == pytest.approx(100.0)
    assert len(data.histograms) == 2 and data.thresholds


def test_report_cli_writes_escaped_self_contained_html(gated, tmp_path: Path) -> None:
    run, base, gates = gated
    out = tmp_path / "r.html"
    res = subprocess.run([sys.executable, "-m", "iqaflow", "report", str(run), "--out", str(out), "--worst", "4",
                          "--gates", str(gates), "--baseline", str(base)],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert res.returncode == 0, res.stderr
    html = out.read_text()
    assert html.count('class="thumb"') == 4 and "s&amp;&lt;x&gt;" in html and "<x>" not in html
    assert "http://" not in html and "https://" not in html and "<script" not in html  # nothing fetched, no JS
    assert 'id="drift"' in html and "KS" in html and "EMPTY_FILE" in html


def test_report_renders_in_headless_chromium(gated, tmp_path: Path) -> None:
    from cdp import Browser, find_chromium

    from iqaflow.tasks.report.build import write_report

    exe = find_chromium()
    if exe is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium; .ci/run installs it)")
    run, base, gates = gated
    page = Path(write_report(str(run), str(tmp_path / "report.html"), str(gates), str(base), worst=8))
    browser = Browser(exe, tmp_path / "profile")
    try:
        browser.open(page.as_uri())
        info = browser.evaluate("""({
            thumbs: [...document.querySelectorAll('img.thumb')].map(i => [i.complete, i.naturalWidth]),
            plots: [...document.querySelectorAll('img.plot')].map(i => [i.complete, i.naturalWidth]),
            sections: [...document.querySelectorAll('h2')].map(h => h.id),
            title: document.title})""")
        errors = browser.errors()
        # The same checks must catch a broken page: a console error and an undecodable image.
        browser.open("data:text/html,<title>bad</title><script>console.error('boom')</script>"
                     "<img class='thumb' src='data:image/jpeg;base64,AAAA'>")
        bad_errors = browser.errors()
        bad = browser.evaluate("[...document.querySelectorAll('img.thumb')].map(i => i.naturalWidth)")
    finally:
        browser.close()
    assert errors == [], errors
    assert info["title"] == "iqaflow report: r1"
    assert len(info["thumbs"]) == 8 and all(ok and w > 0 for ok, w in info["thumbs"]), info["thumbs"]
    assert len(info["plots"]) == 4 and all(ok and w > 0 for ok, w in info["plots"])  # 2 histograms + 2 drift
    assert info["sections"] == ["summary", "scores", "folders", "worst", "errors", "gates", "drift"]
    assert any("boom" in e for e in bad_errors) and bad == [0]


def test_medical_thumbnails_are_withheld_in_phi_safe_runs(tmp_path: Path) -> None:
    from iqaflow.tasks.report.build import build_report

    run = make_run(tmp_path, n=6, fmt="DICOM")  # PNG pixels, but recorded as DICOM: the report goes by the record
    data = build_report(str(run), worst=3)
    assert len(data.worst) == 3 and all(im.thumb is None and "PHI-safe" in im.note for im in data.worst)
    (run / "config.json").write_text(json.dumps({"source": str(tmp_path / "src"), "phi_safe": False}))
    assert all(im.thumb for im in build_report(str(run), worst=3).worst)


DUP_GATES = """version: 1
name: dedup-report
image_rules:
  - name: unique
    require: not is_duplicate
    outcome: reject
    reason: "duplicate_of:{duplicate_of}"
    on_null: pass
  - name: informative
    require: entropy >= 3
    outcome: flag
    reason: low_information
"""


def make_dup_run(root: Path) -> tuple[Path, list[dict]]:
    """Ten duplicate groups (one of eight images, nine pairs), three singletons (one a size outlier), with the
    collection columns and hygiene scores written by hand."""
    from iqaflow.schemas.results import COLLECTION_FIELDS

    rng = np.random.default_rng(3)
    src = root / "src"
    rows: list[dict] = []

    def add(name: str, group: int | None, kept: str | None, distance: int | None, entropy: float,
            outlier: bool = False, mode: str = "RGB", spread: float = 40.0) -> None:
        path = src / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.random((24, 32, 3)) * 255).astype(np.uint8)).save(path)
        iid = hashlib.blake2b(str(path).encode(), digest_size=8).hexdigest()
        kept_id = hashlib.blake2b(str(src / kept).encode(), digest_size=8).hexdigest() if kept else None
        rows.append({Col.IMAGE_ID: iid, Col.URI: str(path), Col.STATUS: Status.OK.value, Col.SHARD_ID: "s",
                     Col.WIDTH: 32, Col.HEIGHT: 24, Col.FORMAT: "PNG", Col.MODE: mode, Col.DUP_GROUP: group,
                     Col.DUPLICATE_OF: kept_id, Col.DUP_DISTANCE: distance, Col.IS_DUPLICATE: kept is not None,
                     Col.ASPECT_RATIO: 4.0 if outlier else 1.33, Col.MEGAPIXELS: 0.00077, Col.SIZE_OUTLIER: outlier,
                     "entropy": entropy, "blank_fraction": 0.2, "colour_spread": spread})

    add("big/kept.png", 1, None, None, 7.0)
    for i, distance in enumerate((0, 0, 2, 3, 4, 5, 6)):
        add(f"big/dup{i}.png", 1, "big/kept.png", distance, 7.0)
    for g in range(2, 11):
        add(f"pairs/p{g}.png", g, None, None, 6.0)
        add(f"pairs/p{g}_copy.png", g, f"pairs/p{g}.png", 0 if g % 2 else 4, 2.0 if g == 2 else 6.0)
    add("solo/a.png", None, None, None, 1.0, spread=0.0)  # low information, grey pixels stored as RGB
    add("solo/gray.png", None, None, None, 5.0, mode="L", spread=0.0)  # a grayscale file: not counted
    add("solo/wide.png", None, None, None, 6.0, outlier=True)
    for r in rows:
        if r[Col.DUP_GROUP] is None:
            r[Col.IS_DUPLICATE] = False
    schema = pa.schema([*results_schema(["entropy", "blank_fraction", "colour_spread"]), *COLLECTION_FIELDS])
    return write_results(root / "runs" / "dups", rows, schema, src, 12), rows


def test_duplicate_groups_and_hygiene_counts(tmp_path: Path) -> None:
    from iqaflow.models.gate_binding import prepare
    from iqaflow.tasks.gates.gate import apply_decisions, locate_run, results_schema_of
    from iqaflow.tasks.report.build import build_report
    from iqaflow.tasks.report.dups import DUP_GROUPS, DUP_MEMBERS
    from iqaflow.tasks.report.html import render

    run, rows = make_dup_run(tmp_path)
    gates = tmp_path / "gates.yaml"
    gates.write_text(DUP_GATES)
    paths = locate_run(str(run))
    apply_decisions(paths, prepare(str(gates), results_schema_of(paths)))
    data = build_report(str(run), str(gates), worst=0)
    u = data.duplicates
    assert u is not None and u.grouped
    # Counted here from the rows themselves.
    dups = [r for r in rows if r[Col.IS_DUPLICATE]]
    assert (u.groups, u.images_in_groups) == (10, sum(r[Col.DUP_GROUP] is not None for r in rows)) == (10, 26)
    assert (u.duplicates, u.exact, u.near) == (len(dups), sum(r[Col.DUP_DISTANCE] == 0 for r in dups),
                                               sum(r[Col.DUP_DISTANCE] > 0 for r in dups)) == (16, 6, 10)
    assert u.exact_groups == 4  # the pairs with an odd id
    # The largest groups: the group of eight first, kept image first, then by distance, at most 6 shown.
    assert len(u.largest) == DUP_GROUPS and u.largest[0].size == 8 and not u.largest[0].exact
    big = u.largest[0].members
    assert len(big) == DUP_MEMBERS and big[0].kept and big[0].name == "big/kept.png" and big[0].distance is None
    assert [m.distance for m in big[1:]] == [0, 0, 2, 3, 4] and not any(m.kept for m in big[1:])
    assert all(m.thumb for g in u.largest for m in g.members)
    assert [g.group for g in u.largest[1:]] == list(range(2, 9))  # equal sizes: by group id
    assert {m.status for m in big[1:]} == {"reject"} and big[0].status == "pass"
    # Per hygiene check: the documented thresholds, and what the gate file's rules on that column did.
    counts = {h.check: (h.test, h.images, h.gate) for h in u.hygiene}
    assert counts["duplicates (not kept)"] == ("is_duplicate", 16, "duplicate_of:{duplicate_of} (reject): 16")
    assert counts["size outliers (IQR fences)"] == ("size_outlier", 1, "")
    assert counts["low information"] == ("entropy < 3", 2, "low_information (flag): 2")
    assert counts["blank"][1] == 0 and counts["grayscale stored as colour"][:2] == ("colour_spread <= 2 (RGB files)", 1)
    html = render(data)
    assert 'id="duplicates"' in html and 'href="#duplicates"' in html and "and 2 more" in html
    assert html.count('class="card kept"') == DUP_GROUPS and "distance <b>4</b>" in html
    assert "duplicate_of:{duplicate_of} (reject): 16" in html


def test_no_duplicates_section_without_the_columns(gated) -> None:
    from iqaflow.tasks.report.build import build_report
    from iqaflow.tasks.report.html import render

    data = build_report(str(gated[0]), worst=0)
    assert data.duplicates is None and 'id="duplicates"' not in render(data)
