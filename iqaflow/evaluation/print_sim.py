"""Print-audit ground truth: digital masters, their printed pages (with known defects) and scans of them.

Everything is seeded and pure numpy/cv2. Units: ``dpi`` fixes the master's pixel grid; sizes in the
catalogue are in mm (``mm_px``), areas in mm² (one master pixel is ``(25.4/dpi)²`` mm²).

* ``make_master``: a page (A4 = 210x297 mm by default) with white margins, a header, paragraphs of
  glyph-like text (``cv2.putText`` random words, cap height 2.2-3.5 mm), a photo (a resized
  ``skimage.data`` image) and a solid colour patch; the layout varies with the seed.
* The printed page is the master in float32 with defects drawn on it in master coordinates
  (``iqaflow.evaluation.print_defects_sim``), then paper texture: a smooth low-frequency shading
  (±``PAPER_LOW`` relative) and fine fibre noise (``PAPER_FIBRE``), multiplicative on reflectance so ink
  is affected less than paper white.
* ``scan_page``: the printed page placed on the scanner bed (skew up to ±``MAX_SKEW_DEG``, scale ±3 %,
  shift up to ±3 mm, in a canvas with ``BED_PAD_MM`` of lid around the page), optical blur (sigma
  0.5-1.2 px at 300 dpi, scaled with dpi), the sensor's tone curve, noise and JPEG (quality 85-95).
  The tone curve is *neutral-ish*: s_c = w_c (b + (1 - b) (v/255)^g_c), one curve shape for all channels
  (gamma g in 0.85-1.15, each channel deviating by at most ±``GAMMA_SPREAD``; black level b 0-5 % of white)
  scaled by each channel's white w_c (0.88-0.97: paper and lamp colour). That is the scanner variation the
  inspector must calibrate away; a chromatic shift of the print is not of that form.
* ``simulate_job``: N pages at one dpi, a share clean, the rest with defects from the catalogue; yields
  ``SimPage(page_id, master, scan, truth)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from iqaflow.evaluation.print_units import DefectTruth, mm_px, px_mm2

A4_MM = (210.0, 297.0)  # width, height
MAX_SKEW_DEG = 1.5
MAX_SCALE = 0.03
MAX_SHIFT_MM = 3.0
BED_PAD_MM = 6.0  # scanner bed around the page: the page (mostly) stays inside the scan
PAPER_LOW = 0.006  # low-frequency paper shading, relative reflectance (1 sigma)
PAPER_FIBRE = 0.008  # fine fibre noise, relative reflectance (1 sigma)
GAMMA_SPREAD = 0.012
TONE_STEPS = 64  # sub-levels of the tone lookup table  # per-channel deviation from the scanner's common gamma
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")


@dataclass(frozen=True)
class PageTruth:
    page_id: str
    dpi: int
    seed: int
    defects: tuple[DefectTruth, ...]
    homography: np.ndarray  # 3x3, master px -> scan px (identity-like for missing pages)
    scan_params: dict[str, float]


@dataclass(frozen=True)
class SimPage:
    page_id: str
    master: np.ndarray  # uint8 RGB
    scan: np.ndarray  # uint8 RGB
    truth: PageTruth


@lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, ...]:
    from skimage import data

    out = []
    for name in PHOTOS:
        img = getattr(data, name)()
        out.append(img[:, :, :3] if img.ndim == 3 else np.stack([img] * 3, axis=2))
    return tuple(out)


def _photo(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A photo cropped to the box's aspect and resized to it."""
    img = _photos()[int(rng.integers(len(PHOTOS)))]
    ih, iw = img.shape[:2]
    aspect = w / h
    if iw / ih > aspect:
        cw = int(ih * aspect)
        x = int(rng.integers(0, iw - cw + 1))
        img = img[:, x:x + cw]
    else:
        ch = int(iw / aspect)
        y = int(rng.integers(0, ih - ch + 1))
        img = img[y:y + ch]
    interp = cv2.INTER_AREA if w < img.shape[1] else cv2.INTER_CUBIC
    return cv2.resize(np.ascontiguousarray(img), (w, h), interpolation=interp)


def _text_block(page: np.ndarray, rng: np.random.Generator, x0: int, y0: int, x1: int, y1: int,
                dpi: int, cap_mm: float | None = None) -> None:
    """Lines of random 'words' (dark strokes) filling the box [x0, x1) x [y0, y1)."""
    cap = mm_px(cap_mm if cap_mm is not None else float(rng.uniform(2.2, 3.5)), dpi)
    scale = cap / 22.0  # HERSHEY_SIMPLEX capitals are ~22 px tall at scale 1
    thick = max(1, round(cap / 11))
    pitch = int(round(cap * float(rng.uniform(1.6, 2.0))))
    ink = int(rng.integers(0, 45))
    colour = (ink, ink, ink) if rng.random() < 0.8 else (int(rng.integers(0, 40)), int(rng.integers(0, 60)),
                                                            int(rng.integers(60, 130)))
    char_w = cv2.getTextSize("n", cv2.FONT_HERSHEY_SIMPLEX, scale, thick)[0][0] + 1
    letters = np.array(list("abcdefghijklmnopqrstuvwxyzabcdeeeinorst"))
    y = y0 + int(cap)
    while y <= y1:
        n_chars = max(1, (x1 - x0) // char_w)
        if rng.random() < 0.15:  # a paragraph's short last line
            n_chars = max(1, int(n_chars * rng.uniform(0.2, 0.7)))
        words, length = [], 0
        while length < n_chars - 2:
            k = int(rng.integers(1, 10))
            word = "".join(rng.choice(letters, k))
            if rng.random() < 0.1:
                word = word.capitalize()
            words.append(word)
            length += k + 1
        line = " ".join(words)
        while len(line) > 1 and cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)[0][0] > x1 - x0:
            line = line[:-1]
        cv2.putText(page, line, (x0, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)
        y += pitch


def make_master(seed: int, dpi: int = 300, size_mm: tuple[float, float] = A4_MM) -> np.ndarray:
    """A digital master (uint8 RGB): header, text paragraphs, a photo and a colour patch in white margins."""
    rng = np.random.default_rng(seed)
    w, h = round(mm_px(size_mm[0], dpi)), round(mm_px(size_mm[1], dpi))
    page = np.full((h, w, 3), 255, np.uint8)
    margin = [round(mm_px(float(rng.uniform(10, 20)) * min(1.0, size_mm[0] / 150), dpi)) for _ in range(4)]
    left, top, right, bottom = margin[0], margin[1], w - margin[2], h - margin[3]
    cw, gap = right - left, round(mm_px(4, dpi))
    y = top
    _text_block(page, rng, left, y, right, y + round(mm_px(8, dpi)), dpi, cap_mm=float(rng.uniform(4, 6)))
    y += round(mm_px(12, dpi))
    blocks = ["photo", "patch", "text", "text"]
    rng.shuffle(blocks)
    unit = (bottom - y) // len(blocks)
    for kind in blocks:
        bh = unit - gap
        if kind == "text":
            _text_block(page, rng, left, y, right, y + bh, dpi)
        else:
            side = float(rng.uniform(0.4, 0.65))  # the figure's share of the width; text beside it
            fw = int(cw * side)
            fx = left if rng.random() < 0.5 else right - fw
            if kind == "photo":
                page[y:y + bh, fx:fx + fw] = _photo(rng, fw, bh)
            else:
                ph = int(bh * rng.uniform(0.5, 1.0))
                colour = rng.integers(30, 235, 3)
                colour[int(rng.integers(3))] = int(rng.integers(0, 80))  # a saturated-ish ink
                page[y:y + ph, fx:fx + fw] = colour
            tx0, tx1 = (fx + fw + gap, right) if fx == left else (left, fx - gap)
            if tx1 - tx0 > mm_px(20, dpi):
                _text_block(page, rng, tx0, y, tx1, y + bh, dpi)
        y += unit
    return page


def paper_texture(shape: tuple[int, int], rng: np.random.Generator, dpi: int) -> np.ndarray:
    """Relative reflectance of the paper (float32 around 1): low-frequency shading x fine fibres."""
    h, w = shape
    grid = rng.standard_normal((max(2, h // round(mm_px(25, dpi))), max(2, w // round(mm_px(25, dpi))))) * PAPER_LOW
    low = cv2.resize(grid.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    fibre = rng.standard_normal((h, w), dtype=np.float32)
    fibre = cv2.GaussianBlur(fibre, (0, 0), max(0.5, mm_px(0.08, dpi)))
    fibre *= PAPER_FIBRE / max(float(fibre.std()), 1e-6)
    return 1.0 + low + fibre


def scan_page(printed: np.ndarray, dpi: int, rng: np.random.Generator, texture: bool = True
              ) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """(scan uint8 RGB, homography master px -> scan px, parameters) of a printed page (float32 RGB 0-255)."""
    h, w = printed.shape[:2]
    page = printed * paper_texture((h, w), rng, dpi)[..., None] if texture else printed
    angle = float(rng.uniform(-MAX_SKEW_DEG, MAX_SKEW_DEG))
    scale = 1.0 + float(rng.uniform(-MAX_SCALE, MAX_SCALE))
    pad = mm_px(BED_PAD_MM, dpi)
    shift = rng.uniform(-1, 1, 2) * mm_px(MAX_SHIFT_MM, dpi)
    out_w, out_h = round(w * scale + 2 * pad), round(h * scale + 2 * pad)
    a = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    a[:, 2] += (out_w / 2 - w / 2 + shift[0], out_h / 2 - h / 2 + shift[1])
    hom = np.vstack([a, [0.0, 0.0, 1.0]])
    out = cv2.warpAffine(page.astype(np.float32), a, (out_w, out_h), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=(250.0, 250.0, 250.0))
    sigma = float(rng.uniform(0.5, 1.2)) * dpi / 300
    out = cv2.GaussianBlur(out, (0, 0), sigma)
    gamma = float(rng.uniform(0.85, 1.15))
    params = {"angle": angle, "scale": scale, "blur_px": sigma, "gamma": gamma}
    # The sensor's curve as a lookup table over 1/64 levels (a power on 27 M floats is slow).
    index = np.empty(out.shape, np.uint16)
    np.multiply(out, TONE_STEPS, out=out)
    np.clip(out, 0, 255 * TONE_STEPS, out=out)
    index[:] = out
    levels = np.arange(255 * TONE_STEPS + 1, dtype=np.float64) / (255 * TONE_STEPS)
    noise = float(rng.uniform(1.0, 2.5))
    scan = np.empty(out.shape, np.uint8)
    black = float(rng.uniform(0.0, 0.05))  # the sensor's black level, a share of each channel's white
    params["black"] = black
    for c in range(3):
        g = gamma + float(rng.uniform(-GAMMA_SPREAD, GAMMA_SPREAD))
        gain = float(rng.uniform(0.88, 0.97))  # paper white / lamp colour: free per channel
        offset = gain * black
        lut = ((offset + (gain - offset) * levels ** g) * 255.0 + 0.5).astype(np.float32)
        chan = lut[index[..., c]]
        chan += rng.standard_normal(chan.shape, dtype=np.float32) * np.float32(noise)
        scan[..., c] = np.clip(chan, 0, 255)
        params.update({f"gamma_{c}": g, f"gain_{c}": gain, f"offset_{c}": offset})
    params["noise"] = noise
    quality = int(rng.integers(85, 96))
    params["jpeg_quality"] = quality
    ok, buf = cv2.imencode(".jpg", scan[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1].copy(), hom, params


def simulate_page(page_id: str, seed: int, dpi: int, defects: Sequence[str] = (),
                  size_mm: tuple[float, float] = A4_MM, grades: Sequence[str | None] | None = None) -> SimPage:
    """One page: its master, the scan of its print with ``defects`` (catalogue names) and the truth."""
    from iqaflow.evaluation.print_defects_sim import apply_defect

    rng = np.random.default_rng([seed, dpi, 7])
    master = make_master(seed, dpi, size_mm)
    printed = master.astype(np.float32)
    truths: list[DefectTruth] = []
    page_kind = next((d for d in defects if d in ("wrong_page", "missing_page")), None)
    for i, kind in enumerate(defects):
        if kind in ("wrong_page", "missing_page"):
            continue
        grade = grades[i] if grades is not None else None
        truths.append(apply_defect(printed, master, kind, rng, dpi, grade))
    full = (0, 0, master.shape[1], master.shape[0])
    area = px_mm2(master.shape[0] * master.shape[1], dpi)
    if page_kind == "wrong_page":
        printed = make_master(seed + 1_000_003, dpi, size_mm).astype(np.float32)
        truths.append(DefectTruth("wrong_page", full, area, 1.0, "page"))
    elif page_kind == "missing_page":
        printed = np.full_like(printed, 255.0)
        truths.append(DefectTruth("missing_page", full, area, 1.0, "page"))
    scan, hom, params = scan_page(printed, dpi, rng)
    return SimPage(page_id, master, scan, PageTruth(page_id, dpi, seed, tuple(truths), hom, params))


CATALOGUE = ("void", "spot", "streak", "band", "periodic_band", "smear", "colour_shift", "misregistration",
             "blurred_text", "wrong_page", "missing_page")


def simulate_job(n_pages: int, dpi: int, seed: int = 0, clean_share: float = 0.5,
                 kinds: Sequence[str] = CATALOGUE, max_defects: int = 1,
                 size_mm: tuple[float, float] = A4_MM) -> Iterator[SimPage]:
    """``n_pages`` pages (page seeds ``seed``..``seed + n_pages - 1``): ``clean_share`` of them clean, the rest
    with 1..``max_defects`` defects, types cycling through ``kinds`` so every type is covered evenly."""
    rng = np.random.default_rng([seed, dpi, 11])
    n_clean = round(n_pages * clean_share)
    order = rng.permutation(n_pages)
    k = 0
    for i in range(n_pages):
        page_seed = seed + i
        defects: list[str] = []
        if order[i] >= n_clean:
            n = int(rng.integers(1, max_defects + 1))
            for _ in range(n):
                kind = kinds[k % len(kinds)]
                k += 1
                if kind in ("wrong_page", "missing_page") and defects:
                    continue
                defects.append(kind)
                if kind in ("wrong_page", "missing_page"):
                    break
        yield simulate_page(f"p{dpi}_{page_seed:05d}", page_seed, dpi, defects, size_mm)
