"""Duplicate fingerprints: exact pixel hash, perceptual hashes against references, the near rule on a labelled set."""

from __future__ import annotations

import io
import random
from pathlib import Path

import dupkit
import numpy as np
import pytest
import scipy.fftpack
from PIL import Image

from iqaflow.models import fingerprints as fp
from iqaflow.tasks.decode import decode

KODAK = Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak"
needs_kodak = pytest.mark.skipif(not KODAK.is_dir(), reason=f"needs the shared Kodak images at {KODAK}")


def _photo(seed: int = 0, h: int = 96, w: int = 128) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / 40.0
    img = np.stack([np.sin(x + c) * np.cos(y * (1 + c)) for c in range(3)], -1) * 90 + 128
    return np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)


def _encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_pixel_hash_ignores_container_and_metadata() -> None:
    img = Image.fromarray(_photo())
    exif = Image.Exif()
    exif[0x0131], exif[0x010E] = "some editor", "a description"  # Software, ImageDescription (no orientation)
    files = [_encode(img, "PNG"), _encode(img, "TIFF"), _encode(img, "TIFF", compression="tiff_lzw"),
             _encode(img, "WEBP", lossless=True), _encode(img, "PNG", exif=exif.tobytes()),
             _encode(img, "WEBP", lossless=True, exif=exif.tobytes()), _encode(img, "BMP")]
    assert len({f for f in files}) == len(files)  # different bytes...
    assert len({fp.pixel_hash(decode(f).pixels) for f in files}) == 1  # ...same pixels
    changed = _photo()
    changed[50, 60, 1] ^= 1  # one pixel, one channel, lowest bit
    assert fp.pixel_hash(changed) != fp.pixel_hash(_photo())


def test_pixel_hash_normalisation() -> None:
    rgb = _photo()
    gray = rgb[:, :, 0].copy()
    opaque = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    translucent = opaque.copy()
    translucent[0, 0, 3] = 254
    assert fp.pixel_hash(opaque) == fp.pixel_hash(rgb)  # an all-opaque alpha is dropped
    assert fp.pixel_hash(translucent) != fp.pixel_hash(rgb)  # any other alpha is part of the pixels
    assert fp.pixel_hash(np.dstack([gray] * 3)) == fp.pixel_hash(gray) == fp.pixel_hash(gray[:, :, None])
    assert fp.pixel_hash(rgb.astype(np.uint16) * 257) != fp.pixel_hash(rgb)  # 16-bit is not the 8-bit image
    assert fp.pixel_hash(rgb[:, :64]) != fp.pixel_hash(rgb[:, 64:].copy())  # same bytes count, other shape/content
    assert fp.pixel_hash(gray.reshape(128, 96)) != fp.pixel_hash(gray)  # same bytes, other shape
    assert len(fp.pixel_hash(rgb)) == 32


def _reference_phash(gray32: np.ndarray) -> np.ndarray:
    """imagehash.phash's maths on an image already 32x32 (imagehash 4.3: fftpack DCT, 8x8 corner > median)."""
    dct = scipy.fftpack.dct(scipy.fftpack.dct(gray32, axis=0), axis=1)
    low = dct[:8, :8]
    return low > np.median(low)


def _signed(bits: np.ndarray) -> int:
    v = int("".join("1" if b else "0" for b in bits.ravel()), 2)
    return v - (1 << 64) if v >= 1 << 63 else v


def test_phash_bits_equal_the_reference_on_32x32_images() -> None:
    rng = np.random.default_rng(1)
    for k in range(50):
        g = rng.integers(0, 256, (32, 32)).astype(np.uint8) if k % 2 else _photo(k, 32, 32)[:, :, 0]
        assert fp.bits_to_int(fp.phash_bits(g)) == _signed(_reference_phash(g))


def test_phash_equals_imagehash() -> None:
    imagehash = pytest.importorskip("imagehash")
    for k in range(10):
        g = Image.fromarray(_photo(k, 32, 32)).convert("L")  # 32x32: imagehash's resize is the identity
        assert fp.bits_to_int(fp.phash_bits(np.asarray(g))) == _signed(imagehash.phash(g).hash)


@needs_kodak
def test_phash_stable_on_kodak() -> None:
    """Full images: our area-averaged 32x32 differs from imagehash's Lanczos one by a pixel value here and there."""
    for path in sorted(KODAK.glob("*.png"))[:6]:
        img = Image.open(path).convert("RGB")
        ref = _signed(_reference_phash(np.asarray(img.convert("L").resize((32, 32), Image.Resampling.LANCZOS))))
        assert fp.hamming(fp.fingerprints(np.asarray(img)).phash, ref) <= 4


def test_perceptual_hashes_follow_content_not_storage() -> None:
    rgb = _photo(3, 120, 160)
    f8 = fp.fingerprints(rgb)
    for same in (rgb.astype(np.uint16) * 257, rgb.astype(np.float32) / 255,
                 np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])):
        f = fp.fingerprints(same)
        assert fp.hamming(f.phash, f8.phash) <= 2 and fp.hamming(f.dhash, f8.dhash) <= 2
    gray = np.asarray(Image.fromarray(rgb).convert("L"))  # BT.601 luma, as the hashes use
    assert fp.hamming(fp.fingerprints(gray).phash, f8.phash) <= 2
    for h in (f8.phash, f8.dhash):
        assert -(1 << 63) <= h < 1 << 63
    with pytest.raises(ValueError, match="expected pixels"):
        fp.fingerprints(np.zeros((4, 4, 2), np.uint8))


def test_hamming_matches_python_popcount() -> None:
    rng = np.random.default_rng(2)
    a = rng.integers(-(1 << 63), (1 << 63) - 1, 500, dtype=np.int64, endpoint=True)
    b = rng.integers(-(1 << 63), (1 << 63) - 1, 500, dtype=np.int64, endpoint=True)
    a[:3], b[:3] = [-1, 0, -(1 << 63)], [0, 0, (1 << 63) - 1]
    expected = [bin((int(x) ^ int(y)) & ((1 << 64) - 1)).count("1") for x, y in zip(a, b, strict=True)]
    assert fp.hamming(a, b).tolist() == expected
    assert expected[:3] == [64, 0, 64]
    assert fp.hamming(a[:, None], b[None, :5]).shape == (500, 5)
    assert fp.bits_to_int(np.ones(64, bool)) == -1 and fp.bits_to_int(np.zeros(64, bool)) == 0


@needs_kodak
def test_near_rule_on_a_labelled_kodak_set(tmp_path: Path) -> None:
    """6 Kodak originals x every transformation + look-alike crops, through decode like a real run.

    Bounds, from the tuning run (bench/dedup.py, where Kodak is part of the tuning set): every
    transformation but one-sided crops found (crops of 7-10% from one edge are where global hashes stop,
    ~90% recall); no look-alike or distinct original grouped.
    """
    originals = sorted(random.Random(0).sample(sorted(KODAK.glob("*.png")), 6))
    items = dupkit.build_set(originals, tmp_path, seed=0, lookalike_every=1)
    assert len(items) == 6 * (1 + len(dupkit.TRANSFORMS) + 2)
    prints = [fp.fingerprints(decode(Path(it.path).read_bytes()).pixels) for it in items]
    cols = {k: np.array([getattr(p, k) for p in prints]) for k in fp.NEAR_RULE}
    near = fp.near_matrix(cols)
    m = dupkit.pair_metrics(items, near)
    assert all(m["recall"][t] == 1.0 for t in dupkit.TRANSFORMS if t != "crop_side"), m["recall"]
    assert m["recall"]["crop_side"] >= 4 / 6, m["recall"]
    assert m["precision"] == 1.0 and m["false_pairs"] == 0
    exact = np.array([p.pixel_hash for p in prints])
    e = dupkit.pair_metrics(items, exact[:, None] == exact[None, :], ["copy"])
    assert e["recall"]["copy"] == 1.0 and e["precision"] == 1.0


def test_dupkit_is_deterministic(tmp_path: Path) -> None:
    src = tmp_path / "orig.png"
    Image.fromarray(_photo(5, 90, 120)).save(src)
    a = dupkit.build_set([src], tmp_path / "a", seed=3)
    b = dupkit.build_set([src], tmp_path / "b", seed=3)
    assert [(x.transform, x.param) for x in a] == [(y.transform, y.param) for y in b]
    assert all(Path(x.path).read_bytes() == Path(y.path).read_bytes() for x, y in zip(a[1:], b[1:], strict=True))


def _chroma_reference(rgb: np.ndarray, t: float = 0.03, eps: float = 0.05) -> int:
    """chroma_hash by hand: block means of a 4x4 grid (sides divisible by 4), BT.601 luma, 2 bits a value."""
    h, w = rgb.shape[:2]
    cells = rgb.astype(np.float64).reshape(4, h // 4, 4, w // 4, 3).mean(axis=(1, 3)) / 255
    y = 0.299 * cells[..., 0] + 0.587 * cells[..., 1] + 0.114 * cells[..., 2]
    values = list(((cells[..., 2] - y) / (y + eps)).ravel()) + list(((cells[..., 0] - y) / (y + eps)).ravel())
    value = 0
    for v in values:  # first bit most significant: (above +t, below -t) per value
        value = (value << 2) | (int(v > t) << 1) | int(v < -t)
    return value - (1 << 64) if value >= 1 << 63 else value


def test_chroma_hash_matches_a_reference_and_abstains_on_gray() -> None:
    """Bits equal the hand-computed reference; brightness keeps the colour layout, a colour cast does not."""
    rgb = _photo(3)
    assert fp.chroma_hash(rgb) == _chroma_reference(rgb)
    assert fp.chroma_hash(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])) == fp.chroma_hash(rgb)
    assert fp.chroma_hash(rgb.astype(np.uint16) * 257) == fp.chroma_hash(rgb)  # bit depth is not colour
    gray = rgb[:, :, 1]
    assert fp.chroma_hash(gray) == fp.chroma_hash(np.dstack([gray] * 3)) == fp.chroma_hash(gray[:, :, None]) == 0
    darker = (rgb * 0.87).astype(np.uint8)  # brightness -13%: chromaticity (B - Y) / Y barely moves
    assert fp.hamming(fp.chroma_hash(darker), fp.chroma_hash(rgb)) <= 4
    cast = rgb.astype(np.float64) * [0.8, 0.95, 1.25]  # bluer: white balance of another shot
    assert fp.hamming(fp.chroma_hash(np.clip(cast, 0, 255).astype(np.uint8)), fp.chroma_hash(rgb)) > 8
    prints = fp.fingerprints(rgb)
    assert prints.chroma_hash == fp.chroma_hash(rgb)


def test_near_matrix_lets_a_grayscale_copy_through_the_colour_check() -> None:
    rgb = _photo(4)
    gray = np.asarray(Image.fromarray(rgb).convert("L"))
    other = np.ascontiguousarray(rgb[:, ::-1])  # mirrored: another picture for the luma hashes
    prints = [fp.fingerprints(x) for x in (rgb, gray, other)]
    cols = {k: np.array([getattr(p, k) for p in prints]) for k in fp.NEAR_RULE}
    near = fp.near_matrix(cols)
    assert cols["chroma_hash"][1] == 0 and near[0, 1] and not near[0, 2]
