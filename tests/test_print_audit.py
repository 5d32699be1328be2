"""Print audits: scans made from masters (page rotated 1-3 degrees, scaled, shifted, blurred, halftoned,
noisy; defects drawn on the printed page) are registered back to sub-pixel accuracy, and streaks,
bands and local defects are found where they were drawn.

Registration error is the largest distance between the master's corners mapped by the estimated and
by the true homography (px of the scan); ECC must stay below 1 px, the feature-only homography below
2.5 px (it is the coarse stage). Defects must be located within 3 px across a line and 10 px along it.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from iqaflow.evaluation import synth
from iqaflow.models.printing.lines import MIN_Z, detect_lines
from iqaflow.models.printing.registration import align, corner_error, register
from iqaflow.schemas.results import Col, ErrorCode

H_PAGE, W_PAGE = 360, 480
STREAK_X, STREAK_W, STREAK_Y = 301, 3, (40, 320)
BAND_Y, BAND_H = 150, 6
BLOB = (90, 200, 40, 40)  # x, y, w, h


def master(seed: int = 0) -> np.ndarray:
    """A page: white margins around a photo, like a digital master."""
    crop = synth.random_crops(synth.skimage_images(), 1, 420, seed=seed)[0][1][:300, :420]
    page = np.full((H_PAGE, W_PAGE, 3), 255, np.uint8)
    page[30:330, 30:450] = crop
    return page


def printed(page: np.ndarray, defect: str | None) -> np.ndarray:
    """The page as printed, with a defect in the master's frame (the paper's axes)."""
    out = page.astype(np.float32)
    if defect == "streak":  # a dark line along the feed, top to bottom of the page
        out[STREAK_Y[0]:STREAK_Y[1], STREAK_X:STREAK_X + STREAK_W] *= 0.45
    elif defect == "band":
        out[BAND_Y:BAND_Y + BAND_H, 20:460] = out[BAND_Y:BAND_Y + BAND_H, 20:460] * 0.6 + 255 * 0.4
    elif defect == "blob":
        x, y, w, h = BLOB
        out[y:y + h, x:x + w] = 40
    return out


def scan(page: np.ndarray, angle: float = 2.0, scale: float = 1.05, shift: tuple[float, float] = (12.0, -7.0),
         defect: str | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(scan, true homography master -> scan): the printed page placed on a scanner bed, blurred, halftoned."""
    a = cv2.getRotationMatrix2D((W_PAGE / 2, H_PAGE / 2), angle, scale)
    a[:, 2] += (shift[0] + 20, shift[1] + 20)
    h = np.vstack([a, [0, 0, 1]])
    size = (int(W_PAGE * scale) + 40, int(H_PAGE * scale) + 40)
    out = cv2.warpPerspective(printed(page, defect), h, size, flags=cv2.INTER_LINEAR, borderValue=(255, 255, 255))
    out = cv2.GaussianBlur(out, (0, 0), 0.8)
    yy, xx = np.mgrid[: out.shape[0], : out.shape[1]]
    screen = 4.0 * np.sin(xx * 2.1) * np.sin(yy * 2.1)  # a fine halftone-like dot screen in the scanner's frame
    out = out + screen[..., None] + np.random.default_rng(seed).normal(0, 3.0, out.shape)
    return np.clip(out, 0, 255).astype(np.uint8), h


TRANSFORMS = [(1.0, 1.0, (5.0, 3.0)), (2.0, 1.05, (12.0, -7.0)), (3.0, 0.92, (-9.0, 14.0)), (-2.5, 1.1, (0.0, 0.0))]


@pytest.mark.parametrize(("angle", "scale", "shift"), TRANSFORMS)
def test_registration_is_sub_pixel(angle: float, scale: float, shift: tuple[float, float]) -> None:
    page = master()
    s, h_true = scan(page, angle, scale, shift)
    assert corner_error(register(page, s, "ecc").homography, h_true, page.shape) < 1.0
    assert corner_error(register(page, s, "tiles").homography, h_true, page.shape) < 1.0
    assert corner_error(register(page, s, "homography").homography, h_true, page.shape) < 2.5


def test_align_crops_both_to_the_overlap() -> None:
    from iqaflow.models.classical.fr import ssim_map
    from iqaflow.models.colour import convert

    page = master()
    s, _ = scan(page, 2.0, 1.05, (12.0, -7.0))
    got, ref, reg, overlap = align(s, page)
    assert got.shape == ref.shape and overlap > 0.85 and reg.correlation is not None and reg.correlation > 0.95
    assert ssim_map(convert(got, "gray"), convert(ref, "gray")).mean() > 0.6


def _lines(defect: str | None, axis: int) -> tuple[float, ...]:
    from iqaflow.models.colour import convert

    page = master()
    s, _ = scan(page, 2.0, 1.05, (12.0, -7.0), defect=defect)
    got, ref, _, _ = align(s, page)
    x0, y0, _, _ = _crop_origin(s, page)
    peak, *box = detect_lines(convert(got, "gray"), convert(ref, "gray"), axis)
    return (peak, box[0] + x0, box[1] + y0, box[2] + x0, box[3] + y0)


def _crop_origin(s: np.ndarray, page: np.ndarray) -> tuple[int, int, int, int]:
    from iqaflow.models.printing.registration import overlap_box

    return overlap_box(register(page, s).homography, s.shape, page.shape)


def test_streak_along_the_feed_is_localised() -> None:
    clean = _lines(None, 0)
    peak, x0, y0, x1, y1 = _lines("streak", 0)
    assert peak > 3 * max(clean[0], MIN_Z) and peak > 8
    assert abs(x0 - STREAK_X) <= 3 and abs(x1 - (STREAK_X + STREAK_W)) <= 3
    assert abs(y0 - STREAK_Y[0]) <= 10 and abs(y1 - STREAK_Y[1]) <= 10


def test_band_across_the_feed_is_localised() -> None:
    peak, _, y0, _, y1 = _lines("band", 1)
    assert peak > 8 and abs(y0 - BAND_Y) <= 3 and abs(y1 - (BAND_Y + BAND_H)) <= 3


def test_registration_failure_is_a_row_error() -> None:
    from iqaflow.models.printing.registration import RegistrationError

    blank = np.full((H_PAGE, W_PAGE, 3), 255, np.uint8)
    with pytest.raises(RegistrationError, match="too few features"):
        align(scan(master())[0], blank)


@pytest.fixture
def job(tmp_path: Path) -> Path:
    """masters/ and scans/ of a print job: a clean page, a streaked page, a page with a blot, and a scan whose
    master is blank (cannot be registered). Scans are JPEGs, masters PNGs: pairs match by stem."""
    (tmp_path / "masters").mkdir()
    (tmp_path / "scans").mkdir()
    for name, seed, defect in (("p1", 0, None), ("p2", 1, "streak"), ("p3", 2, "blob")):
        page = master(seed)
        cv2.imwrite(str(tmp_path / "masters" / f"{name}.png"), page[:, :, ::-1])
        s, _ = scan(page, 1.5 + seed, 1.02, (6.0, -4.0), defect=defect, seed=seed)
        cv2.imwrite(str(tmp_path / "scans" / f"{name}.jpg"), s[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    cv2.imwrite(str(tmp_path / "masters" / "p4.png"), np.full((H_PAGE, W_PAGE, 3), 255, np.uint8))
    cv2.imwrite(str(tmp_path / "scans" / "p4.jpg"), scan(master(3))[0])
    return tmp_path


def _ssim_gates(folder: Path) -> Path:
    """Gates on local SSIM and the streak detector (the audit before print inspection, still supported)."""
    path = folder / "ssim_gates.yaml"
    path.write_text("""version: 1
name: print_audit_ssim
image_rules:
  - {name: matched, require: error_code is null, outcome: reject, reason: no_master_or_unregistered}
  - {name: structure, require: ssim >= 0.8, outcome: reject, reason: low_ssim}
  - {name: local_defect, require: ssim_worst >= 0.5, outcome: reject, reason: local_defect}
  - {name: no_streaks, require: streaks < 8, outcome: reject, reason: streak}
  - {name: no_banding, require: banding < 8, outcome: flag, reason: banding}
collection: {on_fail: fail, gates: [{type: reject_rate, max: 0.1}]}
""")
    return path


@pytest.mark.slow
def test_print_job_flow_registers_localises_and_reports(prefect_api: None, job: Path, tmp_path: Path) -> None:
    from iqaflow.config.run import build_config
    from iqaflow.errors import GateFailed
    from iqaflow.flows.score import run_score

    cfg = build_config({
        "source": str(job / "scans"), "reference_root": str(job / "masters"), "out": str(tmp_path / "out"),
        "models": ["ssim", "ssim_worst", "streaks"], "align": "ecc", "heatmap_below": 0.3, "workers": 1,
        "track": False, "gates": str(_ssim_gates(tmp_path)),
    })
    try:
        run_score(cfg)
    except GateFailed:
        pass  # 3 of 4 pages fail: the job's reject rate gate fails, after results and reports are written
    run = next((tmp_path / "out" / "runs").iterdir())
    rows = {Path(r[Col.URI]).stem: r for r in pq.read_table(run / "results").to_pylist()}
    for name in ("p1", "p2", "p3"):
        r = rows[name]
        assert r[Col.ERROR_CODE] is None and r[Col.ALIGN_CORRELATION] > 0.9 and r[Col.ALIGN_OVERLAP] > 0.8
    assert rows["p4"][Col.ERROR_CODE] == ErrorCode.REGISTRATION_FAILED.value
    assert rows["p1"][Col.GATE_STATUS] == "pass" and rows["p1"][Col.HEATMAP_URI] is None
    assert rows["p2"]["streaks"] > 8 and abs(rows["p2"]["streak_x0"] - STREAK_X) <= 3
    assert "streak" in rows["p2"][Col.GATE_REASONS]
    x, y, w, h = BLOB
    r3 = rows["p3"]
    assert "local_defect" in r3[Col.GATE_REASONS]
    assert r3["ssim_worst_x0"] < x + w and r3["ssim_worst_x1"] > x and r3["ssim_worst_y0"] < y + h and \
        r3["ssim_worst_y1"] > y
    heatmap = Path(r3[Col.HEATMAP_URI])
    assert heatmap.parent == run / "heatmaps" and heatmap.name == f"{r3[Col.IMAGE_ID]}.png"
    png = cv2.imread(str(heatmap))
    assert png is not None and png.shape[0] <= H_PAGE and png.shape[1] <= W_PAGE and png.shape[0] > H_PAGE * 0.8
    report = (run / "print_report.html").read_text()
    assert "1 of 4 pages pass" in report and report.count("data:image/png;base64,") >= 1 and "p3.jpg" in report


def test_example_run_configs_validate(monkeypatch: pytest.MonkeyPatch) -> None:
    """The documented run configs (and the gate files they name) load against the run's columns."""
    from iqaflow.config.run import load_config

    repo = Path(__file__).resolve().parent.parent
    monkeypatch.chdir(repo)
    printing = load_config(repo / "examples" / "print_audit_run.yaml", {})
    assert printing.align == "tiles" and printing.print_inspect and printing.fr_models()
    assert {"defect_count", "defect_worst_type", "delta_e_p95"} <= set(printing.outputs())
    medical = load_config(repo / "examples" / "medical_intake_run.yaml", {})
    assert medical.sniff_extensionless and medical.phi_safe and medical.volume_slices == 8


def test_align_without_a_full_reference_model_is_a_config_error(tmp_path: Path) -> None:
    from iqaflow.config.run import build_config
    from iqaflow.errors import ConfigError

    with pytest.raises(ConfigError, match=r"align compare.*no full-reference model.*Fix"):
        build_config({"source": str(tmp_path), "models": ["sharpness"], "align": "ecc"})


@pytest.mark.slow
def test_print_inspection_flow_finds_defects_gates_and_reports(prefect_api: None, tmp_path: Path) -> None:
    """Simulated pages (iqaflow.evaluation.print_sim, A6 at 150 dpi) through the whole flow with the example gate
    file: the clean page passes; a void, a streak and a colour shift are rejected with their type as the reason and
    located within 1 mm in the defects table; a wrong page keeps its registration error and is named."""
    from iqaflow.config.run import build_config
    from iqaflow.errors import GateFailed
    from iqaflow.evaluation.print_sim import mm_px, simulate_page
    from iqaflow.flows.score import run_score

    truth = {}
    for d in ("masters", "scans"):
        (tmp_path / d).mkdir()
    for name, defects in (("clean", ()), ("void", ("void",)), ("streak", ("streak",)),
                          ("colour", ("colour_shift",)), ("wrong", ("wrong_page",))):
        page = simulate_page(name, 40 + len(truth), 150, defects, size_mm=(105, 148))
        cv2.imwrite(str(tmp_path / "masters" / f"{name}.png"), page.master[:, :, ::-1])  # no dpi in the file
        cv2.imwrite(str(tmp_path / "scans" / f"{name}.jpg"), page.scan[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
        truth[name] = page.truth.defects
    repo = Path(__file__).resolve().parent.parent
    cfg = build_config({
        "source": str(tmp_path / "scans"), "reference_root": str(tmp_path / "masters"), "out": str(tmp_path / "out"),
        "models": ["ssim"], "align": "tiles", "print_inspect": True, "print_dpi": 150, "workers": 1, "track": False,
        "gates": str(repo / "examples" / "print_audit_registered.yaml"),
    })
    with pytest.raises(GateFailed):  # 4 of 5 pages rejected: the job's reject-rate gate fails after the reports
        run_score(cfg)
    run = next((tmp_path / "out" / "runs").iterdir())
    rows = {Path(r[Col.URI]).stem: r for r in pq.read_table(run / "results").to_pylist()}
    assert rows["clean"][Col.GATE_STATUS] == "pass" and rows["clean"][Col.DEFECT_COUNT] == 0
    assert rows["clean"][Col.DELTA_E_P95] < 3 and rows["clean"][Col.HEATMAP_URI] is None
    for name, kind in (("void", "void"), ("streak", "streak"), ("colour", "colour_shift")):
        r = rows[name]
        assert r[Col.GATE_STATUS] == "reject" and r[Col.DEFECT_WORST_TYPE] == kind, r
        assert (f"defect:{kind}" in r[Col.GATE_REASONS]) or (kind == "colour_shift" and "colour_shift" in
                                                             r[Col.GATE_REASONS])
        assert Path(r[Col.HEATMAP_URI]).is_file()
    assert rows["colour"][Col.DELTA_E_P95] >= 2.5
    wrong = rows["wrong"]
    assert wrong[Col.ERROR_CODE] == ErrorCode.REGISTRATION_FAILED.value and wrong[Col.DEFECT_WORST_TYPE] == "wrong_page"
    assert wrong[Col.ERROR_MESSAGE].startswith("wrong_page")
    defects = pq.read_table(run / "defects").to_pylist()
    assert {d[Col.IMAGE_ID] for d in defects} == {rows[n][Col.IMAGE_ID] for n in ("void", "streak", "colour", "wrong")}
    tol = mm_px(1.0, 150)
    for name in ("void", "streak"):
        (t,) = truth[name]
        found = [d for d in defects if d[Col.IMAGE_ID] == rows[name][Col.IMAGE_ID] and d["type"] == name]
        x, y, w, h = t.bbox
        # Across a streak (and around a void) the box is within 1 mm of the truth; along a streak it lies on it (a
        # lighter streak shows only where there is ink, so its pieces follow the page's content).
        along = lambda d, y=y, h=h: d["y"] >= y - tol and d["y"] + d["h"] <= y + h + tol and d["h"] >= 10 * tol  # noqa: E731
        assert any(abs(d["x"] - x) <= tol and abs(d["x"] + d["w"] - x - w) <= tol and (
            along(d) if name == "streak" else abs(d["y"] - y) <= tol and abs(d["y"] + d["h"] - y - h) <= tol)
            for d in found), (t.bbox, found)
        if name == "void":
            assert any(abs(d["area_mm2"] - t.area_mm2) <= 0.3 * t.area_mm2 for d in found), (t.area_mm2, found)
    report = (run / "print_report.html").read_text()
    assert "1 of 5 pages pass" in report and "void at x" in report and "streak at x" in report
    pages = {Path(p["uri"]).stem: p for p in json.loads((run / "print_report.json").read_text())}
    assert not pages["clean"]["defects"] and "void" in {d["type"] for d in pages["void"]["defects"]}
