"""Print inspection on small simulated pages (A6 at 100 dpi, 413x583 px): clean scans stay clean, each defect
of the catalogue is found with its type and a box within ``TOL_MM`` of the truth, areas within 30 %, the
tone curve and a uniform colour shift are measured. Scans are brought into the master's frame with the
simulator's true homography (registration has its own tests), except where ``align`` is the point.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from iqaflow.evaluation import print_defects_sim as D
from iqaflow.evaluation.print_sim import DefectTruth, _photo, _text_block, make_master, mm_px, scan_page
from iqaflow.models.printing import bands
from iqaflow.models.printing import tone as print_tone
from iqaflow.models.printing.defects import Defect, Inspection, inspect
from iqaflow.models.printing.registration import overlap_box, warp_to_master

DPI = 100
TOL_MM = 1.0
TOL = mm_px(TOL_MM, DPI)
TEXT = (40, 40, 370, 250)  # x0, y0, x1, y1 of the text block
PATCH = (40, 300, 250, 420)
PHOTO = (270, 300, 370, 420)
PATCH_RGB = (200, 120, 60)


def page(seed: int = 0) -> np.ndarray:
    """A6 master with known regions: text, a colour patch, a photo, white paper below."""
    rng = np.random.default_rng(seed)
    m = np.full((583, 413, 3), 255, np.uint8)
    _text_block(m, rng, TEXT[0], TEXT[1], TEXT[2], TEXT[3], DPI, cap_mm=3.0)
    m[PATCH[1]:PATCH[3], PATCH[0]:PATCH[2]] = PATCH_RGB
    m[PHOTO[1]:PHOTO[3], PHOTO[0]:PHOTO[2]] = _photo(rng, PHOTO[2] - PHOTO[0], PHOTO[3] - PHOTO[1])
    return m


def run(master: np.ndarray, printed: np.ndarray | None = None, seed: int = 0) -> Inspection:
    """Scan ``printed`` (the master if None), register with the true homography, inspect."""
    rng = np.random.default_rng(seed)
    printed = master.astype(np.float32) if printed is None else printed
    scan, hom, _ = scan_page(printed, DPI, rng)
    x0, y0, x1, y1 = overlap_box(hom, scan.shape, master.shape)
    warped = warp_to_master(scan, hom, master.shape)
    return inspect(warped[y0:y1, x0:x1], master[y0:y1, x0:x1], DPI, (x0, y0))


def near(box: tuple[int, int, int, int], truth: tuple[int, int, int, int], tol: float = TOL) -> bool:
    return all(abs(a - b) <= tol for a, b in zip((box[0], box[1], box[0] + box[2], box[1] + box[3]),
                                                 (truth[0], truth[1], truth[0] + truth[2], truth[1] + truth[3]),
                                                 strict=True))


def only(result: Inspection, kind: str) -> Defect:
    found = [d for d in result.defects if d.type == kind]
    assert len(found) == 1, result.defects
    return found[0]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_clean_pages_have_no_defects(seed: int) -> None:
    res = run(page(seed), seed=seed)
    assert res.defect_count == 0, res.defects
    assert res.delta_e_p95 < 1.5


def test_clean_simulated_a6_pages_have_no_defects() -> None:
    for seed in (5, 6):
        m = make_master(seed, DPI, (105.0, 148.0))
        res = run(m, seed=seed)
        assert res.defect_count == 0, (seed, res.defects)


def test_void_over_text_is_found() -> None:
    m = page()
    printed = m.astype(np.float32)
    # An 80 px void at 300 dpi: 6.8 mm across, over the text.
    r = mm_px(80 * 25.4 / 300 / 2, DPI)
    D.void(printed, m, DPI, 200.0, 140.0, r, r)
    # The evidence is the ink removed: its box (white space between lines shows nothing either way).
    lost = (m.astype(np.float32).mean(axis=2) < 160) & (printed.mean(axis=2) > 250)
    ys, xs = np.nonzero(lost)
    evidence = (int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1)
    res = run(m, printed)
    d = only(res, "void")
    assert near(d.box, evidence) and res.defect_count == 1, (d, evidence)


def test_void_on_ink_area_is_measured() -> None:
    m = page()
    printed = m.astype(np.float32)
    truth = D.void(printed, m, DPI, 120.0, 360.0, mm_px(2.0, DPI), mm_px(1.5, DPI))
    d = only(run(m, printed), "void")
    assert near(d.box, truth.bbox)
    assert abs(d.area_mm2 - truth.area_mm2) <= 0.3 * truth.area_mm2
    assert d.density_change < -10  # ink removed: lighter than expected


def test_one_square_millimetre_spot() -> None:
    m = page()
    printed = m.astype(np.float32)
    r = mm_px(np.sqrt(1.0 / np.pi), DPI)  # a disc of 1 mm²
    truth = D.spot(printed, DPI, 150.0, 500.0, r, r, 30.0)
    assert 0.8 < truth.area_mm2 < 1.3  # anti-aliased edge pixels count by coverage
    res = run(m, printed)
    d = only(res, "spot")
    assert near(d.box, truth.bbox) and res.defect_count == 1
    assert abs(d.area_mm2 - truth.area_mm2) <= 0.3 * truth.area_mm2


def test_ten_percent_streak() -> None:
    m = page()
    printed = m.astype(np.float32)
    truth = D.streak(printed, DPI, 300.4, mm_px(0.5, DPI), 0, m.shape[0], 0.10)
    res = run(m, printed)
    d = only(res, "streak")
    x0, x1 = d.box[0], d.box[0] + d.box[2]
    assert abs(x0 - truth.bbox[0]) <= TOL and abs(x1 - (truth.bbox[0] + truth.bbox[2])) <= TOL
    assert d.box[3] > 0.8 * (res.z_map.shape[0] * mm_px(1, DPI))  # most of the (cropped) page's height


def test_ten_percent_partial_streak_on_ink() -> None:
    m = page()
    printed = m.astype(np.float32)
    truth = D.streak(printed, DPI, 100.0, mm_px(1.0, DPI), 290, 430, -0.10)  # lighter, across the patch
    d = only(run(m, printed), "streak")
    assert abs(d.box[0] - truth.bbox[0]) <= TOL and abs(d.box[0] + d.box[2] - truth.bbox[0] - truth.bbox[2]) <= TOL
    assert abs(d.box[1] - 300) <= mm_px(5, DPI) and abs(d.box[1] + d.box[3] - 420) <= mm_px(5, DPI)


def test_ten_percent_band() -> None:
    m = page()
    printed = m.astype(np.float32)
    truth = D.band(printed, DPI, 460.0, mm_px(4, DPI), 0.10)
    res = run(m, printed)
    d = only(res, "band")
    assert abs(d.box[1] - truth.bbox[1]) <= TOL and abs(d.box[1] + d.box[3] - truth.bbox[1] - truth.bbox[3]) <= TOL
    assert res.defect_count == 1, res.defects


def test_periodic_band() -> None:
    m = page()
    printed = m.astype(np.float32)
    truth = D.band(printed, DPI, 150.0, 0, 0.12, period_px=mm_px(5, DPI), y_end=560)
    res = run(m, printed)
    bands = [d for d in res.defects if d.type == "band"]
    assert bands and all(d.box[1] >= truth.bbox[1] - mm_px(6, DPI) for d in bands)
    longest = max(bands, key=lambda d: d.box[3])
    assert longest.box[3] >= 0.7 * truth.bbox[3]


def test_colour_shift_of_three_is_found_and_measured() -> None:
    m = page()
    printed = m.astype(np.float32)
    box = (PATCH[0], PATCH[1], PATCH[2] - PATCH[0], PATCH[3] - PATCH[1])
    truth = D.colour_shift(printed, DPI, box, 3.0, hue=2.0)
    res = run(m, printed)
    d = only(res, "colour_shift")
    assert abs(d.severity - truth.strength) <= 0.5
    assert near(d.box, truth.bbox, tol=mm_px(3, DPI))  # the ΔE map's cells are 1 mm, smoothed over 3


def test_misregistered_plane() -> None:
    m = page()
    printed = m.astype(np.float32)
    D.misregistration(printed, DPI, 2, 0.3, 0.0)
    res = run(m, printed)
    d = only(res, "misregistration")
    assert abs(d.severity - 0.3) <= 0.05
    assert res.defect_count == 1, res.defects  # the plane's offset is compensated before local analysis


def test_tone_curve_is_recovered() -> None:
    rng = np.random.default_rng(0)
    master = rng.integers(0, 256, (200, 300, 3)).astype(np.float32)
    curve = lambda v: 8 + 235 * (v / 255) ** 0.8  # noqa: E731
    scan = curve(master) + rng.normal(0, 2, master.shape).astype(np.float32)
    scan[50:80, 50:120] = 255  # a defect must not bend the curve
    luts = print_tone.fit_tone_curves(scan, master, np.ones(master.shape[:2], bool))[0]
    v = np.arange(5, 251)
    assert np.max(np.abs(luts[:, v] - curve(v))) < 1.0


def test_uniform_colour_shift_delta_e() -> None:
    """A uniform ΔE over a colour patch is measured within ±0.5 (the region's mean of the smoothed map), on a
    page with a neutral grey wedge and text (what the scanner calibration relies on)."""
    m = np.full((583, 413, 3), 255, np.uint8)
    for i, v in enumerate(range(20, 240, 20)):
        m[40:200, 40 + i * 30:70 + i * 30] = v
    m[240:480, 40:370] = (90, 140, 190)
    _text_block(m, np.random.default_rng(0), 40, 490, 370, 580, DPI, cap_mm=2.5)
    printed = m.astype(np.float32)
    truth = D.colour_shift(printed, DPI, (40, 240, 330, 240), 5.0, hue=0.5)
    found = [d for d in run(m, printed).defects if d.type == "colour_shift" and near(d.box, truth.bbox, mm_px(3, DPI))]
    assert len(found) == 1 and abs(found[0].severity - truth.strength) <= 0.5, found


def test_wrong_and_missing_pages() -> None:
    m = page(0)
    other = make_master(9, DPI, (105.0, 148.0))
    res = run(m, other.astype(np.float32))
    assert res.worst_type == "wrong_page"
    res = run(m, np.full(m.shape, 255.0, np.float32))
    assert res.worst_type == "missing_page"


def test_blurred_text() -> None:
    m = page()
    printed = m.astype(np.float32)
    blur = D.blurred_text(printed, DPI, (60, 60, 120, 80), 0.4)
    d = only(run(m, printed), "blurred_text")
    assert near(d.box, blur.bbox, tol=mm_px(3, DPI))


@pytest.mark.xfail(reason="a smear over sparse 100 dpi text is found as darker spots along its trail, not one smear",
                   strict=False)
def test_smear() -> None:
    m = page()
    printed = m.astype(np.float32)
    smear = D.smear(printed, DPI, (200, 140, 100, 80), mm_px(2.5, DPI))
    found = [d for d in run(m, printed).defects if near(d.box, smear.bbox, tol=mm_px(5, DPI))]
    assert found and found[0].type == "smear"


def test_truth_record_area_units() -> None:
    t = DefectTruth("spot", (0, 0, 10, 10), 1.0, 1.0, "")
    assert t.area_mm2 == 1.0 and round(mm_px(25.4, 300)) == 300
    assert cv2.getVersionMajor() >= 4


def test_band_contrast_needs_a_change_along_the_feed_not_a_change_of_mix() -> None:
    # A tuning page (seed 5040, 300 dpi) gave a false band: a solid patch whose tone the model missed by
    # -10 levels ends at row 60 on the right half, while text takes the left half's flat pixels in rows
    # 48-60, so the row median over flat pixels steps to the patch's -10 for those rows. No row changed.
    rng = np.random.default_rng(0)
    resid = rng.normal(0, 0.5, (120, 400)).astype(np.float32)
    resid[:60, 200:] -= 10.0  # the patch: a constant tone-model miss
    flat = np.ones_like(resid, dtype=bool)
    flat[48:60, :200] = False  # text rows on the left: no flat pixels there
    fake = (0, 48, 400, 12)
    assert abs(bands.band_contrast(resid, flat, fake, -7.0)) < 1.0  # independent: every block is unchanged
    # A real band 8 levels darker over the same rows shows in every block, against both sides (+-0.5 levels).
    resid[48:60] -= 8.0
    assert bands.band_contrast(resid, flat, fake, -7.0) == pytest.approx(-8.0, abs=0.5)
