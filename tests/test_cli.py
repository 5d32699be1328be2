"""The command line, run as a user runs it: a subprocess, exit codes and one-line reasons."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def iqaflow(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "iqaflow", *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd
    )


def test_models_lists_scorers_with_kind_direction_range() -> None:
    res = iqaflow("models")
    assert res.returncode == 0, res.stderr
    for text in ("sharpness", "exposure", "noise", "NR", "higher", "lower"):
        assert text in res.stdout
    detail = iqaflow("models", "exposure")
    assert detail.returncode == 0 and "[0, 1]" in detail.stdout and "clipped_highlights" in detail.stdout
    assert "[0, 1]" in iqaflow("models", "--long").stdout


def test_models_fits_an_80_column_terminal_one_line_per_scorer() -> None:
    from iqaflow.models.registry import all_scorers

    res = subprocess.run([sys.executable, "-m", "iqaflow", "models"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "COLUMNS": "80"})
    lines = res.stdout.splitlines()
    assert res.returncode == 0 and all(len(line) <= 80 for line in lines), res.stdout
    for name in all_scorers():
        assert sum(line.split()[:1] == [name] for line in lines) == 1, name


def test_help_everywhere_with_examples() -> None:
    top = iqaflow("--help")
    assert top.returncode == 0 and "score" in top.stdout and "models" in top.stdout
    sc = iqaflow("score", "--help")
    assert sc.returncode == 0 and "Examples" in sc.stdout and "--shard-size" in sc.stdout


def test_help_paragraphs_reflow_in_80_columns() -> None:
    # A docstring's own line breaks must not survive into the help: in rich mode each wrapped source line
    # became a short terminal line ("direction) or one" on a line of its own).
    res = subprocess.run([sys.executable, "-m", "iqaflow", "gates", "suggest", "--help"], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "COLUMNS": "80"})
    text = res.stdout.split("Usage:", 1)[1].split("\u256d", 1)[0]  # description, before the first box
    paragraphs: list[list[str]] = [[]]
    for line in text.splitlines()[1:]:  # after the usage line
        (paragraphs[-1].append(line.strip()) if line.strip() else paragraphs.append([]))
    paragraphs = [p for p in paragraphs if p]
    assert res.returncode == 0 and len(paragraphs) >= 2, res.stdout
    for body in paragraphs:
        # Every line but a paragraph's last fills most of the 78 usable columns.
        assert all(len(ln) >= 60 for ln in body[:-1]), body


def test_bad_config_exits_non_zero_with_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text("shard_size: -3\n")
    res = iqaflow("score", str(tmp_path), "--config", str(cfg))
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "shard_size" in lines[0] and "Fix:" in lines[0]


def test_unknown_model_and_missing_source(tmp_path: Path) -> None:
    res = iqaflow("score", str(tmp_path), "--models", "sharpnes")
    assert res.returncode == 2 and "did you mean 'sharpness'" in res.stderr.lower()
    res = iqaflow("score", str(tmp_path / "nope"), "--out", str(tmp_path / "out"), "--workers", "1")
    assert res.returncode != 0 and "does not exist" in res.stderr


@pytest.mark.slow
def test_score_end_to_end_prints_results_location(tmp_path: Path) -> None:
    from iqaflow.evaluation.synth import make_collection

    src = make_collection(tmp_path / "imgs", n_bases=3, size=96)
    out = tmp_path / "out"
    res = iqaflow("score", str(src), "--out", str(out), "--workers", "1", "--shard-size", "20", "--run-id", "cli")
    assert res.returncode == 0, res.stderr[-2000:]
    results = out / "runs" / "cli" / "results"
    assert f"results: {results}" in " ".join(res.stdout.split())
    summary = json.loads((out / "runs" / "cli" / "summary.json").read_text())
    assert summary["images"] == 3 * 14 + 3 and summary["errors"] == 3 and summary["shards"] == 3


@pytest.mark.slow
def test_demo_is_gated_pass_flag_and_reject_with_reasons(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "demo"
    res = iqaflow("demo", "--out", str(out), "--bases", "2", "--workers", "1")
    assert res.returncode == 0, res.stderr[-2000:]
    text = " ".join(res.stdout.split())
    assert "gates demo.yaml on run demo" in text and "ungated" not in text
    table = pq.read_table(out / "results" / "runs" / "demo" / "results").to_pylist()
    statuses = {r["gate_status"] for r in table}
    assert statuses == {"pass", "flag", "reject"}, statuses
    reasons = {reason for r in table for reason in r["gate_reasons"] or []}
    assert {"unreadable", "blurry", "very_noisy", "badly_exposed"} <= reasons, reasons
    assert all(r["gate_reasons"] for r in table if r["gate_status"] != "pass")
