"""Huge images: downscaled within a memory bound (JPEG while decoding), or TOO_LARGE from the header alone.

Every image is generated here. The 108 MP JPEG is over Pillow's decompression-bomb limit (89.5 MP),
which the decoder used to report as TOO_LARGE; it now decodes at 1/4 scale in the DCT domain.
"""

from __future__ import annotations

import io
import re
import struct
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from iqaflow.schemas.results import Col, ErrorCode
from iqaflow.tasks import decode as decode_mod
from iqaflow.tasks.decode import DEFAULT_MAX_PIXELS, DecodeFailure, decode, target_size

BIG_W, BIG_H = 12000, 9000  # 108 MP
SMALL_BOUND = 2_000_000  # keeps the test fast; the default is 36 MP


def _smooth(w: int, h: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    """Smooth random content (bicubic upsampling of a tiny random image): fast to make, encode and compare."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, h // 200), max(2, w // 200), channels), dtype=np.uint8)
    out = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return out if channels > 1 else out.reshape(h, w)


def _jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    return cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


def _png(arr: np.ndarray) -> bytes:
    img = arr[..., ::-1] if arr.ndim == 3 and arr.shape[2] == 3 else arr
    return cv2.imencode(".png", np.ascontiguousarray(img), [cv2.IMWRITE_PNG_COMPRESSION, 1])[1].tobytes()


def _pil(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR (valid CRC) claims width x height RGB, with a few bytes of image data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _png_chunk(b"IEND", b""))


def _jpeg_claiming(width: int, height: int, progressive: bool = False) -> bytes:
    """A small JPEG whose frame header (SOF0, or SOF2 when progressive) is patched to claim width x height."""
    data = bytearray(_pil(Image.new("RGB", (16, 16), (90, 120, 150)), "JPEG", progressive=progressive))
    at = data.index(b"\xff\xc2" if progressive else b"\xff\xc0")
    data[at + 5 : at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


class _PeakRss:
    """Peak resident memory of this process while in the block (Linux: VmHWM, reset via clear_refs)."""

    available = Path("/proc/self/clear_refs").exists()

    @staticmethod
    def _kib(field: str) -> int:
        return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))  # type: ignore[union-attr]

    def __enter__(self) -> _PeakRss:
        Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
        self.base = self._kib("VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        self.bytes = (self._kib("VmHWM") - self.base) * 1024


class _NoPeak:
    bytes = 0

    def __enter__(self) -> _NoPeak:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


@pytest.fixture(scope="module")
def big_jpeg() -> bytes:
    bgr = _smooth(BIG_W, BIG_H)  # random colours: no need to swap to OpenCV's channel order
    return cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def test_target_size_is_bounded_symmetric_and_keeps_aspect() -> None:
    rng = np.random.default_rng(1)
    for _ in range(2000):
        w, h = (int(v) for v in rng.integers(1, 70000, 2))
        bound = int(rng.integers(1, 50_000_000))
        tw, th = target_size(w, h, bound)
        assert (th, tw) == target_size(h, w, bound)  # a reference stored rotated is reduced alike
        if w * h <= bound:
            assert (tw, th) == (w, h)
            continue
        assert tw * th <= bound and tw <= w and th <= h
        if min(tw, th) >= 100:  # aspect kept to within a pixel's rounding
            assert abs(tw / th - w / h) <= (w / h) * 2.5 / min(tw, th)
    assert target_size(5000, 4000, None) == (5000, 4000)
    assert target_size(100_000, 1, 1000) == (1000, 1)


def test_huge_jpeg_decodes_at_reduced_size_within_a_memory_bound(big_jpeg: bytes, monkeypatch) -> None:
    drafted: list[tuple[int, int]] = []
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):  # noqa: ANN001, ANN202
        out = real_draft(self, mode, size)
        drafted.append(self.size)
        return out

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    decode(_png(np.zeros((8, 8, 3), np.uint8)))  # warm up lazy imports outside the measurement
    if _PeakRss.available:
        with _PeakRss() as bounded:
            out = decode(big_jpeg, max_pixels=SMALL_BOUND)
    else:
        out = decode(big_jpeg, max_pixels=SMALL_BOUND)
    tw, th = target_size(BIG_W, BIG_H, SMALL_BOUND)
    assert (out.width, out.height, out.format) == (BIG_W, BIG_H, "JPEG")  # the original size
    assert out.pixels.shape == (th, tw, 3) and th * tw <= SMALL_BOUND
    assert out.scale == pytest.approx(tw / BIG_W) and out.scale == pytest.approx(th / BIG_H, rel=1e-3)
    # libjpeg decoded at 1/4 (the strongest DCT scale still >= the target): the 108 MP raster never existed.
    assert drafted == [(BIG_W // 4, BIG_H // 4)]

    with _PeakRss() if _PeakRss.available else _NoPeak() as full:
        reference = cv2.imdecode(np.frombuffer(big_jpeg, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    # Independent reference: full decode, then OpenCV's area averaging to the same size. Mean |diff| < 2 grey
    # levels (measured ~0.7: libjpeg's scaled IDCT and chroma upsampling are not a box filter, exactly).
    assert _mad(out.pixels, cv2.resize(reference, (tw, th), interpolation=cv2.INTER_AREA)) < 2.0
    del reference
    if _PeakRss.available:
        # Tolerance: the bounded decode peaks at ~50 MB (1/4-scale raster 20 MB + small copies) against
        # >= 324 MB for any full decode; allow a quarter of the full raster and of the measured full decode.
        assert bounded.bytes < 0.25 * BIG_W * BIG_H * 3, bounded.bytes
        assert bounded.bytes < 0.25 * full.bytes, (bounded.bytes, full.bytes)


def test_jpeg_held_under_the_full_decode_ceiling_is_reduced_further(big_jpeg: bytes, monkeypatch) -> None:
    # With the default 36 MP bound the 108 MP JPEG would decode at full size (1/2 is under 36 MP) but that is
    # over the ceiling, so it decodes at 1/2 (27 MP) and is kept there; a lowered ceiling forces 1/8.
    out = decode(big_jpeg)
    assert out.pixels.shape == (BIG_H // 2, BIG_W // 2, 3) and out.scale == 0.5
    assert out.pixels.shape[0] * out.pixels.shape[1] <= DEFAULT_MAX_PIXELS
    monkeypatch.setattr(decode_mod, "FULL_DECODE_CEILING", 5_000_000)  # read at call time: raisable, lowerable
    out = decode(big_jpeg)
    assert out.pixels.shape == (BIG_H // 8, BIG_W // 8, 3) and out.scale == 0.125
    assert (out.width, out.height) == (BIG_W, BIG_H)


def test_huge_jpeg_at_full_size_is_too_large(big_jpeg: bytes) -> None:
    with pytest.raises(DecodeFailure) as exc:
        decode(big_jpeg, max_pixels=None)  # no downscaling asked: over FULL_DECODE_CEILING
    assert exc.value.code == ErrorCode.TOO_LARGE
    assert "12000x9000" in exc.value.message and "FULL_DECODE_CEILING" in exc.value.message


def test_exif_rotated_jpeg_reports_displayed_size() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 1500x1000, displayed 1000x1500
    data = _pil(Image.fromarray(_smooth(1500, 1000, seed=2)), "JPEG", quality=92, exif=exif.tobytes())
    small = decode(data, max_pixels=None)
    out = decode(data, max_pixels=300_000)
    tw, th = target_size(1000, 1500, 300_000)
    assert (out.width, out.height) == (1000, 1500) == (small.width, small.height)
    assert out.pixels.shape == (th, tw, 3) and out.scale == pytest.approx(tw / 1000)
    assert _mad(out.pixels, cv2.resize(small.pixels, (tw, th), interpolation=cv2.INTER_AREA)) < 2.0


@pytest.mark.parametrize(
    ("name", "make", "shape", "dtype"),
    [
        ("rgb png", lambda: _png(_smooth(3000, 2000, seed=3)), (3,), np.uint8),
        ("grey png", lambda: _png(_smooth(3000, 2000, seed=4, channels=1)), (), np.uint8),
        ("16-bit grey png", lambda: _png(_smooth(1200, 800, seed=5, channels=1).astype(np.uint16) * 257), (),
         np.uint16),
        ("16-bit rgb png (OpenCV)", lambda: _png(_smooth(1200, 800, seed=6).astype(np.uint16) * 257), (3,),
         np.uint16),
        ("rgba png", lambda: _pil(Image.fromarray(np.dstack([_smooth(1200, 800, seed=7),
                                                             np.full((800, 1200), 200, np.uint8)])), "PNG"),
         (3,), np.uint8),
        ("palette png", lambda: _pil(Image.fromarray(_smooth(1200, 800, seed=8)).quantize(64), "PNG"), (3,),
         np.uint8),
        ("tiff", lambda: _pil(Image.fromarray(_smooth(1200, 800, seed=9)), "TIFF"), (3,), np.uint8),
        ("webp", lambda: _pil(Image.fromarray(_smooth(1200, 800, seed=10)), "WEBP", lossless=True), (3,),
         np.uint8),
    ],
)
def test_large_images_of_other_formats_are_downscaled(name: str, make, shape: tuple, dtype: type) -> None:  # noqa: ANN001
    data = make()
    full = decode(data, max_pixels=None)
    bound = full.width * full.height // 5
    out = decode(data, max_pixels=bound)
    tw, th = target_size(full.width, full.height, bound)
    assert (out.width, out.height, out.format, out.mode) == (full.width, full.height, full.format, full.mode), name
    assert out.pixels.shape == (th, tw, *shape) and out.pixels.dtype == dtype, name
    assert tw * th <= bound and out.scale == pytest.approx(tw / full.width), name
    # Independent reference: OpenCV area averaging of the full decode; 16-bit compared in 8-bit grey levels.
    ref = cv2.resize(full.pixels, (tw, th), interpolation=cv2.INTER_AREA)
    unit = 257.0 if dtype == np.uint16 else 1.0
    assert _mad(out.pixels, ref) / unit < 2.0, name


def test_png_header_claiming_ten_gigapixels_is_too_large_without_decoding() -> None:
    data = _png_header_only(100_000, 100_000)
    t0 = time.perf_counter()
    with _PeakRss() if _PeakRss.available else _NoPeak() as peak:
        with pytest.raises(DecodeFailure) as exc:
            decode(data)
    assert time.perf_counter() - t0 < 1.0
    assert peak.bytes < 50e6  # nothing near the 30 GB the header claims was allocated
    msg = exc.value.message
    assert exc.value.code == ErrorCode.TOO_LARGE
    assert "100000x100000" in msg and "89.5 MP" in msg and "FULL_DECODE_CEILING" in msg and "Fix:" in msg


@pytest.mark.parametrize(
    ("data", "size", "limit"),
    [
        (_png_header_only(12000, 9000), "12000x9000", "FULL_DECODE_CEILING"),  # between Pillow's warning and error
        (_jpeg_claiming(40000, 25000), "40000x25000", "JPEG_DECODE_CEILING"),  # a 1-gigapixel JPEG header
        (_jpeg_claiming(12000, 9000, progressive=True), "12000x9000", "FULL_DECODE_CEILING"),  # not draftable
    ],
)
def test_headers_over_a_ceiling_are_too_large_at_once(data: bytes, size: str, limit: str) -> None:
    t0 = time.perf_counter()
    with pytest.raises(DecodeFailure) as exc:
        decode(data, max_pixels=SMALL_BOUND)
    assert time.perf_counter() - t0 < 1.0
    assert exc.value.code == ErrorCode.TOO_LARGE and size in exc.value.message and limit in exc.value.message


def test_images_within_the_bound_are_untouched() -> None:
    data = _jpeg(_smooth(640, 480, seed=11))
    out = decode(data, max_pixels=640 * 480)
    assert out.scale == 1.0 and out.pixels.shape == (480, 640, 3)
    np.testing.assert_array_equal(out.pixels, decode(data, max_pixels=None).pixels)
    with pytest.raises(ValueError, match="max_pixels"):
        decode(data, max_pixels=0)


def test_score_members_scores_a_huge_image_with_its_original_size(tmp_path: Path, big_jpeg: bytes) -> None:
    from iqaflow.models.registry import create_scorer
    from iqaflow.tasks.score.shard import score_members

    big = tmp_path / "big.jpg"
    big.write_bytes(big_jpeg)
    row = score_members([str(big)], [None], [create_scorer("sharpness")], "s",
                        max_pixels=SMALL_BOUND).to_pylist()[0]
    assert row[Col.STATUS] == "ok" and row[Col.ERROR_CODE] is None
    assert (row[Col.WIDTH], row[Col.HEIGHT], row[Col.FORMAT]) == (BIG_W, BIG_H, "JPEG")
    assert row[Col.DECODE_SCALE] == pytest.approx(target_size(BIG_W, BIG_H, SMALL_BOUND)[0] / BIG_W, rel=1e-6)
    assert row["sharpness"] is not None and np.isfinite(row["sharpness"])


def test_fr_pair_of_the_same_size_stays_paired_when_both_are_downscaled(tmp_path: Path) -> None:
    from iqaflow.models.registry import create_scorer
    from iqaflow.tasks.score.shard import score_members

    master = _smooth(2400, 1600, seed=12)
    (tmp_path / "ref.png").write_bytes(_png(master))  # decoded whole, then box-filtered
    (tmp_path / "img.jpg").write_bytes(_jpeg(master, quality=95))  # DCT-scaled to 1/2, then box-filtered
    rows = score_members([str(tmp_path / "img.jpg")], [str(tmp_path / "ref.png")], [create_scorer("psnr")], "s",
                         max_pixels=500_000).to_pylist()
    row = rows[0]
    assert row[Col.STATUS] == "ok", row[Col.ERROR_MESSAGE]
    assert (row[Col.WIDTH], row[Col.HEIGHT]) == (2400, 1600) and row[Col.DECODE_SCALE] < 0.5
    assert row["psnr"] > 35  # the same picture, downscaled alike


def test_run_config_bound_reaches_the_shard_settings() -> None:
    from iqaflow.config.run import RunConfig, build_config
    from iqaflow.errors import ConfigError
    from iqaflow.tasks.score.shard import ScoreSettings

    assert RunConfig.model_fields["max_decode_pixels"].default == DEFAULT_MAX_PIXELS
    assert ScoreSettings(("sharpness",)).max_decode_pixels == DEFAULT_MAX_PIXELS
    base = build_config({"source": "x", "models": ["sharpness"]})
    assert build_config({"source": "x", "models": ["sharpness"], "max_decode_pixels": None}).max_decode_pixels is None
    changed = build_config({"source": "x", "models": ["sharpness"], "max_decode_pixels": 12_000_000})
    assert changed.fingerprint() != base.fingerprint()  # scores change with the bound, so shard ids do too
    with pytest.raises(ConfigError) as exc:
        build_config({"source": "x", "models": ["sharpness"], "max_decode_pixels": 1000})
    msg = str(exc.value)
    assert "'max_decode_pixels'" in msg and "65536" in msg and "got 1000" in msg and "Fix:" in msg
