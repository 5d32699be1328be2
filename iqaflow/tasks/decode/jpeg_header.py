"""Read a JPEG's markers (not its pixels) to tell whether the tensor decode path may take it.

The tensor path (``decode_gpu``) must give the row the CPU path (``decode.decode``: Pillow, EXIF
orientation applied, ICC converted to sRGB) would give, so it only takes files where nothing of
that applies. Everything here is a few hundred bytes of parsing; any doubt answers "no", which
only costs speed: the file is decoded on the CPU as before.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache

_SOI, _EOI = b"\xff\xd8", b"\xff\xd9"
_SEQUENTIAL = {0xC0, 0xC1}  # baseline and extended sequential, Huffman coded
_OTHER_SOF = {0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}  # progressive, lossless, arithmetic
_SOS, _APP1, _APP2, _APP14 = 0xDA, 0xE1, 0xE2, 0xEE
_EXIF, _ICC, _MPF = b"Exif\x00\x00", b"ICC_PROFILE\x00", b"MPF\x00"
_RGB_IDS = (ord("R"), ord("G"), ord("B"))


@dataclass(frozen=True)
class JpegHeader:
    width: int
    height: int
    components: int  # 1 (gray) or 3 (YCbCr)

    @property
    def mode(self) -> str:
        """The mode Pillow reports for this file (the results' ``mode`` column)."""
        return "L" if self.components == 1 else "RGB"


def exif_orientation(tiff: bytes) -> int:
    """The orientation tag of an Exif block's IFD0 (1 when absent); raises ValueError when malformed."""
    order = {b"II": "little", b"MM": "big"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        raise ValueError("not a TIFF header")
    ifd = int.from_bytes(tiff[4:8], order)
    count = int.from_bytes(tiff[ifd : ifd + 2], order)
    if ifd + 2 + 12 * count > len(tiff):
        raise ValueError("IFD0 runs past the block")
    for i in range(count):
        entry = tiff[ifd + 2 + 12 * i : ifd + 14 + 12 * i]
        if int.from_bytes(entry[:2], order) == 0x0112:
            if int.from_bytes(entry[2:4], order) != 3:  # SHORT; anything else is not what Pillow expects
                raise ValueError("orientation is not a SHORT")
            return int.from_bytes(entry[8:10], order)
    return 1


def _app1_keeps_pixels(seg: bytes) -> bool:
    """False when Pillow would rotate or flip the image (Exif orientation 2-8, or an XMP orientation)."""
    if seg.startswith(_EXIF):
        try:
            return exif_orientation(seg[len(_EXIF) :]) not in range(2, 9)
        except (ValueError, IndexError):
            return False
    return b"Orientation" not in seg  # XMP tiff:Orientation: Pillow reads it when Exif has none


@lru_cache(maxsize=64)
def icc_is_srgb(icc: bytes) -> bool:
    """True when ``decode_photo.icc_to_srgb`` would leave an RGB image unchanged for this profile."""
    from PIL import ImageCms

    from iqaflow.tasks.decode.photo import _SRGB_NAMES

    try:
        name = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc))).strip().lower()
    except Exception:
        return True  # a broken profile: the CPU path keeps the stored values too
    return name in _SRGB_NAMES or name.startswith("srgb iec61966")


def jpeg_header(data: bytes, max_pixels: int | None) -> JpegHeader | None:
    """The header of a JPEG the tensor path may decode, else None (the CPU path decodes it).

    Taken: complete (ends in EOI), 8-bit sequential Huffman, 1 or 3 YCbCr components, no
    orientation to apply, no ICC profile other than sRGB, no multi-picture (MPO) extension and at
    most ``max_pixels`` pixels (beyond it the CPU path downscales or reports TOO_LARGE).
    """
    if len(data) < 4 or not data.startswith(_SOI) or not data.endswith(_EOI):
        return None
    pos, sof, adobe, icc = 2, None, None, []
    while True:
        if pos + 4 > len(data) or data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        seg = data[pos + 4 : pos + 2 + length]
        if length < 2 or len(seg) != length - 2:
            return None
        if marker == _SOS:
            break
        if marker in _OTHER_SOF or (marker == _APP1 and not _app1_keeps_pixels(seg)):
            return None
        if marker == _APP2 and (seg.startswith(_MPF) or (seg.startswith(_ICC) and len(seg) < 14)):
            return None
        if marker == _APP2 and seg.startswith(_ICC):
            icc.append((seg[12], seg[14:]))
        if marker == _APP14 and seg.startswith(b"Adobe"):
            adobe = seg[11] if len(seg) >= 12 else -1
        if marker in _SEQUENTIAL:
            if sof is not None or len(seg) < 6:
                return None
            sof = seg
        pos += 2 + length
    if sof is None or sof[0] != 8:
        return None
    height, width, comps = int.from_bytes(sof[1:3], "big"), int.from_bytes(sof[3:5], "big"), sof[5]
    if height == 0 or width == 0 or comps not in (1, 3) or len(sof) < 6 + 3 * comps:
        return None
    if comps == 3:
        if tuple(sof[6 + 3 * i] for i in range(3)) == _RGB_IDS or adobe not in (None, 1):
            return None  # stored as RGB, not YCbCr: libjpeg and nvJPEG may disagree on it
        if icc and not icc_is_srgb(b"".join(part for _, part in sorted(icc))):
            return None  # the CPU path converts it to sRGB
    if max_pixels is not None and width * height > max_pixels:
        return None
    return JpegHeader(width, height, comps)
