"""The gate flow and the three example gate files end to end through the CLI, as a user runs them."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from gatekit import gate_text, row, write_run

from iqaflow.schemas.results import Col

pytestmark = pytest.mark.slow
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def cli_env(prefect_api: None) -> dict[str, str]:
    """Subprocesses talk to the session's Prefect test server instead of each starting one."""
    from prefect.settings import PREFECT_API_URL

    return {**os.environ, "COLUMNS": "200", "PREFECT_API_URL": str(PREFECT_API_URL.value())}


def start(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "iqaflow", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def finish(proc: subprocess.Popen[str], timeout: float = 400) -> subprocess.CompletedProcess[str]:
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def flat(text: str) -> str:
    return " ".join(text.split())


def test_gate_flow_state_fails_only_for_fail_gates(prefect_api: None, tmp_path: Path) -> None:
    from iqaflow.flows.gate import gate_flow

    rows = [row(f"/c/{i}.png", 50.0 * i, 1) for i in range(8)]
    run = write_run(tmp_path / "run", rows)
    body = "image_rules:\n  - name: s\n    require: sharpness >= 100\n    outcome: reject\n" \
           "collection:\n  on_fail: {sev}\n  gates:\n    - type: reject_rate\n      max: 0.1\n"
    for severity, failed in (("warn", False), ("fail", True)):
        gates = tmp_path / f"{severity}.yaml"
        gates.write_text(gate_text(body.format(sev=severity)))
        state = gate_flow(str(run), str(gates), return_state=True)
        assert state.is_failed() is failed, state
        report = json.loads((run / "gates" / "report.json").read_text())
        assert report["decisions"]["counts"] == {"pass": 6, "flag": 0, "reject": 2}
        assert report["collection"]["checks"][0]["success"] is False


# Files of the curation collection that copy another one: name -> the original's name. The exact copy ties
# with its original on quality and size, so the policy's last key (uri) keeps the original.
CURATION_COPIES = {"zz_copy_of_00.png": "p00.png", "reencoded_04.jpg": "p04.png", "resized_08.png": "p08.png"}


def curation_photos(folder: Path) -> Path:
    """Distinct photos, some blurred, noisy or over-compressed, three copies of others and broken files:
    a curation batch (make_collection's 13 versions of each base would be mostly duplicates)."""
    import cv2

    from iqaflow.evaluation.synth import (
        _save_png,
        blur,
        jpeg_bytes,
        noise,
        random_crops,
        skimage_images,
        write_broken_files,
    )

    folder.mkdir(parents=True)
    crops = [img for _, img in random_crops(skimage_images(), 24, 128, seed=7)]
    for i, img in enumerate(crops):
        if i % 4 == 3:
            (folder / f"p{i:02d}.jpg").write_bytes(jpeg_bytes(img, 20))
            continue
        version = blur(img, 2.5) if i % 4 == 1 else noise(img, 12, seed=i) if i % 4 == 2 else img
        _save_png(folder / f"p{i:02d}.png", version)
    shutil.copy(folder / "p00.png", folder / "zz_copy_of_00.png")
    (folder / "reencoded_04.jpg").write_bytes(jpeg_bytes(crops[4], 85))
    _save_png(folder / "resized_08.png", cv2.resize(crops[8], (90, 90), interpolation=cv2.INTER_AREA))
    write_broken_files(folder / "broken", jpeg_bytes(crops[0], 90))
    with open(folder / "labels.csv", "w") as fh:  # for `gates suggest`: the blurred ones are bad, clean ones good
        fh.write("path,label\n" + "".join(f"p{i:02d}.png,{'reject' if i % 4 else 'accept'}\n"
                                          for i in range(len(crops)) if i % 4 in (0, 1)))
    return folder


@pytest.fixture(scope="module")
def examples_run(cli_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Score three small collections with the three example gate files, concurrently (one worker each)."""
    from iqaflow.evaluation.synth import make_collection

    root = tmp_path_factory.mktemp("examples")
    photos = make_collection(root / "photos", n_bases=2, size=96)
    curation = curation_photos(root / "curation")
    intake = root / "intake"
    shutil.copytree(photos, intake)
    masters = root / "masters"  # the clean image under every distorted copy's relative path
    for p in photos.rglob("*.*"):
        if p.parent.name != "broken" and p.suffix in (".png", ".jpg"):
            dest = masters / p.relative_to(photos).with_suffix(".png")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(p.parent / f"{p.stem.rsplit('_', 1)[0]}_clean.png", dest)
    out = root / "out"

    def common(name: str) -> list[str]:  # one output folder per run: each has its own MLflow store
        return ["--out", str(out / name), "--workers", "1", "--shard-size", "16", "--run-id", name]

    procs = {
        "curation": start(cli_env, "score", str(curation), *common("curation"), "--gates",
                          str(EXAMPLES / "curation.yaml")),
        "medical": start(cli_env, "score", str(intake), *common("medical"), "--gates",
                         str(EXAMPLES / "medical_intake.yaml")),
        "print": start(cli_env, "score", str(photos), *common("print"), "--models", "psnr,ssim,sharpness",
                       "--reference-root", str(masters), "--gates", str(EXAMPLES / "print_audit.yaml")),
    }
    results = {k: finish(p) for k, p in procs.items()}
    runs = {k: out / k / "runs" / k for k in procs}
    return {"root": root, "photos": photos, "curation": curation, "intake": intake, "runs": runs, "score": results}


def test_score_with_curation_gates(examples_run: dict, cli_env: dict[str, str]) -> None:
    res = examples_run["score"]["curation"]
    assert res.returncode == 0, res.stderr[-3000:]
    run = examples_run["runs"]["curation"]
    text = flat(res.stdout)
    assert "gates curation.yaml on run curation" in text and "skipped optional image rule 'natural'" in text
    assert "would manifest" in text and "dry run" in text and not (run / "manifests").exists()
    table = pq.read_table(run / "results")
    reasons = [r for rs in table[Col.GATE_REASONS].to_pylist() for r in rs]
    assert "least_sharp_decile" in reasons and "blurry" in reasons  # relative rule applied in the final pass
    assert set(table[Col.GATE_STATUS].to_pylist()) == {"pass", "flag", "reject"}
    # The collection pass: each copy is rejected as a duplicate of its original, which is kept.
    rows = {Path(r[Col.URI]).name: r for r in table.to_pylist()}
    dup_of = {name: r for name, r in rows.items() if r[Col.IS_DUPLICATE]}
    assert set(dup_of) == set(CURATION_COPIES), sorted(dup_of)
    for copy, original in CURATION_COPIES.items():
        kept = rows[original]
        assert dup_of[copy][Col.DUPLICATE_OF] == kept[Col.IMAGE_ID] and not kept[Col.IS_DUPLICATE]
        assert f"duplicate_of:{kept[Col.IMAGE_ID]}" in dup_of[copy][Col.GATE_REASONS]
    assert dup_of["zz_copy_of_00.png"][Col.DUP_DISTANCE] == 0
    counts = json.loads((run / "gates" / "report.json").read_text())["routing"]["counts"]
    assert counts["2:manifest"] == {"todo": 1}  # the duplicates manifest, written on --apply
    assert "<html" in (run / "gates" / "data_docs" / "index.html").read_text().lower()
    assert json.loads((run / "gates" / "validation.json").read_text())["success"] is True


def test_gate_command_curation_with_baseline_and_apply(examples_run: dict, cli_env: dict[str, str]) -> None:
    run = examples_run["runs"]["curation"]
    res = finish(start(cli_env, "gate", str(run), "--gates", str(EXAMPLES / "curation.yaml"), "--baseline", str(run),
                       "--apply"))
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((run / "gates" / "report.json").read_text())
    drift = next(c for c in report["collection"]["checks"] if c["type"] == "drift")
    assert drift["success"] is True and drift["observed"] == 0.0
    assert report["decisions"]["rewritten"] == 0  # the score run already wrote the final statuses
    accepted = (run / "manifests" / "accepted.txt").read_text().split()
    table = pq.read_table(run / "results").to_pydict()
    expected = {u for u, s in zip(table[Col.URI], table[Col.GATE_STATUS], strict=True) if s in ("pass", "flag")}
    assert set(accepted) == expected and (run / "manifests" / "rejected.parquet").exists()
    duplicates = {Path(u).name for u in (run / "manifests" / "duplicates.txt").read_text().split()}
    assert duplicates == set(CURATION_COPIES)


def test_medical_intake_quarantines_rejects_on_apply(examples_run: dict, cli_env: dict[str, str]) -> None:
    res = examples_run["score"]["medical"]
    assert res.returncode == 0, res.stderr[-3000:]
    run = examples_run["runs"]["medical"]
    intake: Path = examples_run["intake"]
    assert (intake / "broken" / "empty.jpg").exists() and not (run / "quarantine").exists()  # dry run
    res = finish(start(cli_env, "gate", str(run / "results"), "--gates", str(EXAMPLES / "medical_intake.yaml"),
                       "--apply"))
    assert res.returncode == 0, res.stderr[-3000:]
    quarantined = {p.relative_to(run / "quarantine").as_posix() for p in (run / "quarantine").rglob("*.*")}
    assert {"broken/empty.jpg", "broken/truncated.jpg", "broken/notes.jpg"} <= quarantined
    assert all(not (intake / q).exists() for q in quarantined)  # moved, after a verified copy
    with open(intake / "labels.csv") as fh:
        blurred = {r["path"] for r in csv.DictReader(fh) if r["distortion"] == "blur" and r["level"] in ("2", "3")}
    assert blurred <= quarantined
    assert (run / "manifests" / "accepted.txt").exists() and "move" in flat(res.stdout)


def test_print_audit_fails_the_run_on_reject_rate(examples_run: dict, cli_env: dict[str, str]) -> None:
    res = examples_run["score"]["print"]
    assert res.returncode == 2, res.stderr[-3000:]
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "reject_rate" in errors[0] and "Fix:" in errors[0]
    assert "Traceback" not in res.stderr
    run = examples_run["runs"]["print"]
    report = json.loads((run / "gates" / "report.json").read_text())
    assert [c["name"] for c in report["collection"]["checks"] if c["success"] is False][0] == "reject_rate"
    assert report["routing"]["blocked"] == "" and not report["routing"]["applied"]
    assert "FAIL" in res.stdout and "<html" in (run / "gates" / "data_docs" / "index.html").read_text().lower()
    table = pq.read_table(run / "results").to_pydict()
    by_name = {Path(u).name: (s, r) for u, s, r in zip(table[Col.URI], table[Col.GATE_STATUS],
                                                      table[Col.GATE_REASONS], strict=True)}
    assert by_name["astronaut-000_clean.png"] == ("pass", [])
    assert by_name["empty.jpg"][0] == "reject" and "no_master_or_unreadable" in by_name["empty.jpg"][1]
    res = finish(start(cli_env, "gate", str(run), "--gates", str(EXAMPLES / "print_audit.yaml"), "--apply"))
    assert res.returncode == 2 and "reject_rate" in res.stderr
    assert "blocked: collection gates failed: reject_rate" in flat(res.stdout) and not (run / "review").exists()


def test_gates_suggest_from_labels(examples_run: dict, cli_env: dict[str, str], tmp_path: Path) -> None:
    labels = examples_run["curation"] / "labels.csv"  # blurred crops reject, clean ones accept; the rest unlabelled
    out = tmp_path / "gates.yaml"
    res = finish(start(cli_env, "gates", "suggest", "--labels", str(labels), "--results",
                       str(examples_run["runs"]["curation"]), "--out", str(out)))
    assert res.returncode == 0, res.stderr[-3000:]
    stdout = flat(res.stdout)
    assert "suggested gate: target recall of rejects >= 0.80 (held out by 5-fold CV)" in stdout
    assert "held-out precision" in stdout and "AUC" in stdout and "rule:" in stdout
    from iqaflow.schemas.gates import load_gate_file

    spec = load_gate_file(out)  # one rule beside the readability check, not an OR of per-scorer cuts
    assert spec.image_rules[0].require == "error_code is null" and len(spec.image_rules) == 2
    assert spec.image_rules[1].name in ("quality_gate", "sharpness_gate", "iqaflow_nr_gate", "noise_gate",
                                        "exposure_gate") and spec.image_rules[1].outcome == "reject"
    text = out.read_text()
    assert "5-fold stratified cross-validation" in text and "Youden" not in text
    assert "brightness: no declared direction" in text


def test_gate_command_refuses_a_bad_gate_file_in_one_line(examples_run: dict, cli_env: dict[str, str],
                                                          tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nname: bad\nimage_rules:\n  - name: s\n    require: sharpnes >= 1 or x = 2\n"
                   "    outcome: flag\n")
    res = finish(start(cli_env, "gate", str(examples_run["runs"]["curation"]), "--gates", str(bad)))
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert f"{bad}:5:33: rule 's' require: unknown operator '='" in lines[0] and "Fix:" in lines[0]
