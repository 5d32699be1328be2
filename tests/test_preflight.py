"""Preflight: what a run cannot do ends in one line on stderr and exit code 2, before any server or worker.

The CLI cases run ``iqaflow score`` as a user does (a subprocess) and time it. The time bound is a
correctness check, not a benchmark: starting Prefect's ephemeral API server alone takes about 5 s and a
local Dask cluster more, so a run that ends within the bound cannot have started either. The bound is 3 s
(the issue's goal); on a machine so loaded that merely importing iqaflow, its scorers and s3fs takes
longer than 1 s, it is 1.5 times that import time plus 1.5 s, which still excludes a server start (the
server's start slows down under the same load).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from iqaflow.cli.preflight import (
    check_output,
    check_references,
    check_source,
    check_weights,
    one_line,
    preflight,
    within,
)
from iqaflow.errors import ConfigError, OutputError, SourceError, WeightsError

SLACK_S = 1.5
LOAD_FACTOR = 1.5  # the run's own work (config, the check itself) grows with the load as the imports do


def _loopback_port_nobody_listens_on() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again at once: connections to it are refused


@pytest.fixture(scope="module")
def bound_s() -> float:
    """3 s, or the time to import the CLI, register every scorer and import s3fs (the S3 case needs it) plus
    SLACK_S on a loaded machine."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import iqaflow.cli; from iqaflow.models.registry import all_scorers; "
                    "all_scorers(); import s3fs"], check=True, timeout=120)
    return max(3.0, LOAD_FACTOR * (time.perf_counter() - start) + SLACK_S)


def score(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], float]:
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "iqaflow", "score", *args], capture_output=True, text=True,
                         timeout=120, env=full_env)
    return res, time.perf_counter() - start


def assert_one_line_exit_2(res: subprocess.CompletedProcess[str], seconds: float, bound: float, out: Path,
                           *expected: str) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2, res.stderr[-3000:]
    assert len(lines) == 1, res.stderr[-3000:]
    assert "Traceback" not in res.stderr and "Error logging to API" not in res.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    assert "Fix:" in lines[0], lines[0]
    # No server, no worker, no run folder: the run ended before the flow began.
    assert seconds < bound, f"{seconds:.2f} s (bound {bound:.2f} s): did a server or worker start?"
    assert not (out / "runs").exists() and not list(out.glob("**/manifest.parquet")) if out.exists() else True
    return lines[0]


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    from iqaflow.evaluation.synth import make_collection

    return make_collection(tmp_path / "photos", n_bases=1, size=48)


# -- the three goal cases, through the CLI ------------------------------------------------------------------
def test_missing_weights_one_line_exit_2(tmp_path: Path, photos: Path, bound_s: float) -> None:
    empty = tmp_path / "empty-store"
    empty.mkdir()
    out = tmp_path / "out"
    res, seconds = score(str(photos), "--models", "kang", "--weights", str(empty), "--out", str(out))
    line = assert_one_line_exit_2(res, seconds, bound_s, out, "kang", "missing", "weights add", str(empty))
    assert not out.exists(), line  # the output check comes after the weights check


def test_missing_source_folder_one_line_exit_2(tmp_path: Path, bound_s: float) -> None:
    out = tmp_path / "out"
    res, seconds = score(str(tmp_path / "nope"), "--models", "sharpness", "--out", str(out))
    assert_one_line_exit_2(res, seconds, bound_s, out, "does not exist")
    assert not out.exists()


def test_unreachable_s3_source_one_line_exit_2(tmp_path: Path, bound_s: float) -> None:
    port = _loopback_port_nobody_listens_on()
    out = tmp_path / "out"
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    res, seconds = score("s3://bucket/x", "--models", "sharpness", "--out", str(out), env=env)
    assert_one_line_exit_2(res, seconds, bound_s, out, "s3://bucket/x", "cannot be read", f"127.0.0.1:{port}")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("version: 1\nname: g\nimage_rules:\n  - name: sharp\n    require: sharpnes >= 3\n    outcome: reject\n",
         "sharpnes"),
        ("version: 1\nname: g\nimage_rules:\n  - name: x\n   require: [\n", "not valid YAML"),  # multi-line YAML error
    ],
    ids=["unknown-column", "bad-yaml"],
)
def test_invalid_gate_file_one_line_exit_2(tmp_path: Path, photos: Path, bound_s: float, text: str,
                                           expected: str) -> None:
    gates = tmp_path / "gates.yaml"
    gates.write_text(text)
    out = tmp_path / "out"
    res, seconds = score(str(photos), "--models", "sharpness", "--gates", str(gates), "--out", str(out))
    assert_one_line_exit_2(res, seconds, bound_s, out, "gates.yaml", expected)


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    res, _ = score(str(tmp_path / "nope"), "--models", "sharpness", "--out", str(tmp_path / "out"), "--debug")
    assert res.returncode == 2 and "Traceback" in res.stderr and "SourceError" in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("error: source")


# -- each check ---------------------------------------------------------------------------------------------
def test_weights_missing_mismatch_and_ready(tmp_path: Path) -> None:
    from iqaflow.models.registry import get_scorer_class
    from iqaflow.models.weights import WeightsStore

    check_weights(["sharpness", "noise", "exposure"], str(tmp_path / "none"))  # no weight files needed
    with pytest.raises(WeightsError, match=r"kang \(.*: missing — add the CNNIQA-LIVE file") as missing:
        check_weights(["sharpness", "kang"], str(tmp_path / "none"))
    assert "\n" not in str(missing.value) and "Fix:" in str(missing.value)

    spec = get_scorer_class("kang").info.weights[0]
    WeightsStore(str(tmp_path / "bad")).put_bytes(spec.filename, b"the recorded weights")
    (tmp_path / "bad" / spec.filename).write_bytes(b"swapped or corrupt")  # no longer the recorded sha256
    with pytest.raises(WeightsError, match="mismatch"):
        check_weights(["kang"], str(tmp_path / "bad"))


def test_weights_shipped_with_the_package_count(tmp_path: Path) -> None:
    from iqaflow.models.registry import get_scorer_class
    from iqaflow.models.weights import PACKAGED_DIR

    shipped = [name for name in ("iqaflow_nr", "niqe", "brisque")
               if get_scorer_class(name).info.weights
               and all((PACKAGED_DIR / s.filename).is_file() for s in get_scorer_class(name).info.weights)]
    assert shipped, "expected at least one scorer whose weights ship with iqaflow"
    check_weights(shipped, str(tmp_path / "empty-store"))


def test_source_checks(tmp_path: Path, photos: Path) -> None:
    check_source(str(photos), [".png", ".jpg"])
    nested = tmp_path / "deep" / "a" / "b"
    nested.mkdir(parents=True)
    (nested / "x.JPG").write_bytes(b"\xff\xd8")
    check_source(str(tmp_path / "deep"), [".jpg"])  # case-insensitive, found below the top
    with pytest.raises(SourceError, match="no images found"):
        check_source(str(tmp_path / "deep"), [".jpg"], recursive=False)
    with pytest.raises(SourceError, match="does not exist"):
        check_source(str(tmp_path / "nope"), [".jpg"])
    with pytest.raises(SourceError, match="is a file"):
        check_source(str(nested / "x.JPG"), [".jpg"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="no images found"):
        check_source(str(empty), [".jpg"])


def test_source_manifests(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    good = tmp_path / "m.csv"
    good.write_text("uri,label\n/x/a.jpg,1\n")
    check_source(str(good), [".jpg"])
    (tmp_path / "nouri.csv").write_text("path\n/x/a.jpg\n")
    with pytest.raises(SourceError, match="no 'uri' column"):
        check_source(str(tmp_path / "nouri.csv"), [".jpg"])
    (tmp_path / "empty.csv").write_text("uri\n")
    with pytest.raises(SourceError, match="lists no images"):
        check_source(str(tmp_path / "empty.csv"), [".jpg"])
    with pytest.raises(ConfigError, match="no 'reference_uri' column"):
        check_source(str(good), [".jpg"], need_references=True)
    pq.write_table(pa.table({"uri": ["/x/a.jpg"], "reference_uri": ["/r/a.jpg"]}), tmp_path / "m.parquet")
    check_source(str(tmp_path / "m.parquet"), [".jpg"], need_references=True)
    with pytest.raises(SourceError, match="does not exist"):
        check_source(str(tmp_path / "gone.parquet"), [".jpg"])


def test_unreachable_s3_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    port = _loopback_port_nobody_listens_on()
    for key, value in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    start = time.perf_counter()
    with pytest.raises(SourceError, match="cannot be read"):
        check_source("s3://bucket/x", [".jpg"], timeout_s=1.0)
    with pytest.raises(OutputError, match="not writable"):
        check_output("s3://bucket/out", timeout_s=1.0)
    assert time.perf_counter() - start < 10


def test_output_checks(tmp_path: Path) -> None:
    out = tmp_path / "new" / "out"
    check_output(str(out))
    assert not out.exists() or not any(out.iterdir())  # the probe is gone
    existing = tmp_path / "existing"
    existing.mkdir()
    check_output(str(existing))
    assert existing.is_dir() and not any(existing.iterdir())
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="not writable") as err:
        check_output(str(blocker / "out"))
    assert "Fix:" in str(err.value) and "\n" not in str(err.value)


def test_references(tmp_path: Path) -> None:
    check_references(None)
    check_references(str(tmp_path))
    with pytest.raises(ConfigError, match="reference_root .* does not exist"):
        check_references(str(tmp_path / "masters"))


def test_within_bounds_a_check_that_hangs() -> None:
    start = time.perf_counter()
    with pytest.raises(SourceError, match="did not answer within 0.2 s"):
        within(0.2, "source 's3://slow'", lambda: time.sleep(5), SourceError, "check the endpoint")
    assert time.perf_counter() - start < 2
    with pytest.raises(WeightsError, match="boom"):
        within(1, "x", lambda: (_ for _ in ()).throw(WeightsError("boom")), SourceError, "")


def test_preflight_on_a_config(tmp_path: Path, photos: Path) -> None:
    from iqaflow.config.run import build_config

    preflight(build_config({"source": str(photos), "out": str(tmp_path / "out"), "models": ["sharpness"]}))
    masters = tmp_path / "masters"
    cfg = build_config({"source": str(photos), "out": str(tmp_path / "out"), "models": ["ssim"],
                        "reference_root": str(masters)})
    with pytest.raises(ConfigError, match="reference_root"):
        preflight(cfg)
    masters.mkdir()
    preflight(cfg)


def test_one_line() -> None:
    assert one_line("a\n   b\r\n c ") == "a b c"
