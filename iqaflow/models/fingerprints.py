"""Per-image fingerprints for exact and near-duplicate detection (issue 20).

``pixel_hash`` finds exact duplicates: the same decoded pixels in another container (PNG, TIFF,
lossless WebP) or with other metadata. What counts as "the same pixels":
- the array after decode (EXIF orientation and ICC conversion applied), so an image and its
  downscaled-at-decode copy (``Decoded.scale`` < 1) differ;
- (H, W, 1) is (H, W); a fully opaque alpha channel is dropped (RGBA with alpha 255 == RGB), any other
  alpha is part of the pixels; colour with R == G == B everywhere is the gray (H, W) image;
- the dtype is part of the pixels: 8-bit and 16-bit (or float) copies of one picture do NOT match.

The perceptual hashes find near duplicates (resized, re-encoded, slightly cropped, brightness or
contrast changed). All of them are computed from one area-averaged 64x64 luma image, squashed to a
square whatever the aspect ratio (which makes them insensitive to aspect-changing resizes), so one pass
over the full image serves every hash. Their bit layout is imagehash's (row-major, first bit most
significant): ``phash`` equals ``imagehash.phash`` of the same 32x32 8-bit image. Each is a Python int in
int64 range (the uint64 bit pattern), the type Arrow and Parquet handle best.
``bench/dedup.py`` measured which hashes and radii separate duplicates from look-alikes (tuned on
Kodak + clive-subset variants): ``NEAR_RULE`` (every listed distance within its radius), candidates found
by LSH bands over ``NEAR_BAND``. Global 64-bit hashes reach it for resize, re-encoding, brightness,
contrast, 2-3 degree rotation and centred crops; a 7-10% crop from one edge is their limit (~90% recall).

``chroma_hash`` is the verification stage's signature: the colour layout the luma hashes cannot see. The
same scene shot twice (another moment, white balance, exposure) often has a near pHash and dHash but
other colours, while every near-duplicate transformation keeps the chromaticity of each region (resize,
re-encoding, crops and rotation move it little; brightness scales R, G and B together; contrast <= 15%
desaturates slightly). It is compared only on pairs the luma hashes already admit (a third radius of the
rule). A grayscale image has no colour evidence: its chroma hash is 0, and the rule's check abstains
(``schemas.duplicates.ABSTAINING``), so grayscale copies are still grouped by their luma hashes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from iqaflow.models.colour import to_unit_float
from iqaflow.schemas.duplicates import ABSTAINING, NEAR_RULE

__all__ = ["NEAR_RULE", "fingerprints"]  # the near rule lives with the gate file's duplicates section

HASH_BITS = 64
NEAR_BAND = "phash"
_BASE = 64  # side of the luma image every perceptual hash is computed from
_DCT_N, _DCT_K = 32, 8  # pHash: 32x32 image, its 8x8 lowest DCT frequencies

# Unnormalised DCT-II basis (scipy.fftpack.dct's default), only the 8 lowest rows: C @ X @ C.T is the
# 8x8 corner of imagehash's full 32x32 transform, ~10x cheaper.
_n = np.arange(_DCT_N)
_DCT_ROWS = (2.0 * np.cos(np.pi * np.arange(_DCT_K)[:, None] * (2 * _n[None, :] + 1) / (2 * _DCT_N)))
_BIT_WEIGHTS = np.uint64(1) << np.arange(HASH_BITS - 1, -1, -1, dtype=np.uint64)
# chroma_hash: a 4x4 grid of area means, two chromaticities per cell ((B - Y) and (R - Y) over Y + 0.05, so
# a brightness change that scales R, G and B leaves them), each 2 bits: above +0.03, below -0.03 (neutral:
# 00). 4 x 4 x 2 x 2 = 64 bits; a sign flip costs 2, a step to or from neutral 1.
_CHROMA_GRID, _CHROMA_T, _CHROMA_EPS = 4, 0.03, 0.05
_LUMA = np.array([0.299, 0.587, 0.114])


@dataclass(frozen=True)
class Fingerprints:
    pixel_hash: str  # sha256 of the normalised decoded pixels, first 128 bits as 32 hex characters
    phash: int  # DCT sign pattern: robust to resize, re-encoding, brightness/contrast
    dhash: int  # horizontal gradient signs of a 9x8 image: a second view, which vetoes pHash's look-alikes
    chroma_hash: int  # colour layout (4x4 cells x 2 chromaticities); 0 for grayscale: the colour veto abstains


def pixel_hash(pixels: np.ndarray) -> str:
    """Exact-duplicate key of decoded pixels; see the module docstring for what is normalised."""
    arr = pixels[:, :, 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels
    if arr.ndim == 3 and arr.shape[2] == 4:
        opaque = np.iinfo(arr.dtype).max if np.issubdtype(arr.dtype, np.integer) else 1.0
        if (arr[:, :, 3] == opaque).all():
            arr = arr[:, :, :3]
    if arr.ndim == 3 and arr.shape[2] == 3 and _is_gray(arr):
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ValueError(f"expected pixels of shape (H,W) or (H,W,1|3|4), got {pixels.shape}")
    arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))  # same bytes on any host
    digest = hashlib.sha256(f"{arr.dtype.str}:{arr.shape}".encode())  # shape and dtype are part of the key
    digest.update(memoryview(arr).cast("B"))
    return digest.hexdigest()[:32]


def _is_gray(rgb: np.ndarray) -> bool:
    # One row first: a colour photo fails there, so the full comparison runs only on gray-as-colour images.
    mid = rgb[rgb.shape[0] // 2]
    if not (np.array_equal(mid[:, 0], mid[:, 1]) and np.array_equal(mid[:, 0], mid[:, 2])):
        return False
    return bool(np.array_equal(rgb[:, :, 0], rgb[:, :, 1]) and np.array_equal(rgb[:, :, 0], rgb[:, :, 2]))


def luma_base(pixels: np.ndarray, size: int = _BASE) -> np.ndarray:
    """Decoded pixels -> float32 (size, size) luma in [0, 1], area-averaged (aspect squashed)."""
    img = pixels[:, :, 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels
    if img.ndim == 3 and img.shape[2] in (3, 4):
        # Luma before resizing: both are linear, and one channel is ~2x cheaper to average. BT.601 weights,
        # as Pillow's convert("L"), so a grayscale copy hashes like its colour original.
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY if img.shape[2] == 3 else cv2.COLOR_RGBA2GRAY)
    elif img.ndim != 2:
        raise ValueError(f"expected pixels of shape (H,W) or (H,W,1|3|4), got {pixels.shape}")
    if img.dtype not in (np.uint8, np.uint16, np.float32):
        img = to_unit_float(img)
    small = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return to_unit_float(small)


def bits_to_int(bits: np.ndarray) -> int:
    """64 booleans (row-major, first = most significant) -> the uint64 bit pattern as a signed int64."""
    value = int(np.bitwise_or.reduce(_BIT_WEIGHTS[bits.ravel().astype(bool)], initial=np.uint64(0)))
    return value - (1 << HASH_BITS) if value >= 1 << (HASH_BITS - 1) else value


def phash_bits(gray32: np.ndarray) -> np.ndarray:
    """imagehash's pHash of a 32x32 gray image: the 8x8 lowest DCT coefficients above their median."""
    low = _DCT_ROWS @ gray32.astype(np.float64) @ _DCT_ROWS.T
    return low > np.median(low)


def phash(base: np.ndarray) -> int:
    return bits_to_int(phash_bits(cv2.resize(base, (_DCT_N, _DCT_N), interpolation=cv2.INTER_AREA)))


def dhash(base: np.ndarray) -> int:
    small = cv2.resize(base, (9, 8), interpolation=cv2.INTER_AREA)
    return bits_to_int(small[:, 1:] > small[:, :-1])


def chroma_hash(pixels: np.ndarray) -> int:
    """Colour layout of decoded pixels as 64 bits (see ``_CHROMA_GRID``); 0 for grayscale or neutral images."""
    if pixels.ndim != 3 or pixels.shape[2] < 3:
        return 0  # gray: no colour evidence
    img = np.ascontiguousarray(pixels[:, :, :3])
    if img.dtype not in (np.uint8, np.uint16, np.float32):
        img = to_unit_float(img)
    cells = to_unit_float(cv2.resize(img, (_CHROMA_GRID, _CHROMA_GRID), interpolation=cv2.INTER_AREA))
    cells = cells.astype(np.float64)
    y = cells @ _LUMA
    chroma = np.concatenate([((cells[..., 2] - y) / (y + _CHROMA_EPS)).ravel(),
                             ((cells[..., 0] - y) / (y + _CHROMA_EPS)).ravel()])
    return bits_to_int(np.stack([chroma > _CHROMA_T, chroma < -_CHROMA_T], 1))


def fingerprints(pixels: np.ndarray) -> Fingerprints:
    """Every duplicate fingerprint of one decoded image (``Decoded.pixels``)."""
    base = luma_base(pixels)
    return Fingerprints(pixel_hash=pixel_hash(pixels), phash=phash(base), dhash=dhash(base),
                        chroma_hash=chroma_hash(pixels))


def hamming(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Bitwise Hamming distance of int64 hashes (broadcasting), as uint8."""
    x = np.bitwise_xor(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64))
    # As uint64: numpy counts the bits of a signed int's absolute value (bitwise_count(-1) == 1).
    return np.bitwise_count(x.view(np.uint64))


def near_matrix(cols: Mapping[str, np.ndarray], rule: Mapping[str, int] = NEAR_RULE) -> np.ndarray:
    """All pairs of a small set under ``rule`` (tests, benchmarks): (n, n) bool, every hash within its radius.

    ``cols``: int64 hashes per column. An abstaining hash (chroma_hash) passes where either image has 0,
    as in the collection pass (``tasks.collection.kernel``).
    """
    out = None
    for name, radius in rule.items():
        h = np.asarray(cols[name], dtype=np.int64)
        ok = hamming(h[:, None], h[None, :]) <= radius
        if name in ABSTAINING:
            ok |= (h == 0)[:, None] | (h == 0)[None, :]
        out = ok if out is None else out & ok
    return out
