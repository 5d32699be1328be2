"""A labelled duplicate set generated from real photos, for dedup tests and benchmarks (issue 20).

Every original gets one variant per transformation, with a seeded parameter drawn per (seed, original,
transformation), so a set is reproducible and does not depend on the order of the originals:
- ``copy``: the same pixels re-saved (TIFF, lossless WebP or PNG) with EXIF added: an exact duplicate;
- ``resize``: 40-90% of each side (Lanczos); ``jpeg``: re-encoded at quality 40-95;
- ``crop_side``: 3-10% of the width or height cut from one edge; ``crop_all``: 3-10% of each side
  length cut, split evenly between its two edges (a centred crop);
- ``brightness`` and ``contrast``: Pillow's enhancers at 1 +- 5-15%;
- ``rotate``: +-0.5-3 degrees about the centre, same canvas, black corners;
- ``gray``: converted to luma (an 8-bit single-channel PNG); ``overlay``: a caption in a corner or a
  large semi-transparent watermark across the middle. These two are reported on their own.
Look-alikes are negatives: for every ``lookalike_every``-th original, two crops of 60% of a side, 40% of
that side apart (their overlap is a third of each), each its own identity, so duplicates of neither
the original nor each other. Different photos of one scene (CLIVE's firework and sunset series,
BIQ2021's repeated captures) are negatives already, being distinct originals.
Non-JPEG outputs are PNG, so the only change an item carries is its transformation.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont

from iqaflow.tasks.decode import decode

NEAR = ("copy", "resize", "jpeg", "crop_side", "crop_all", "brightness", "contrast", "rotate")
APART = ("gray", "overlay")  # reported on their own, outside the recall goal
TRANSFORMS = NEAR + APART
_VERSION = 1  # bump when a transformation changes, so cached sets are rebuilt


@dataclass(frozen=True)
class Item:
    path: str
    identity: str  # items with the same identity are duplicates of each other
    source: str  # stem of the original the item was made from
    transform: str  # "original", one of TRANSFORMS, or "lookalike"
    param: str


def _rng(seed: int, stem: str, what: str) -> random.Random:
    return random.Random(f"{seed}:{stem}:{what}")  # str seeds hash with sha512: stable across runs


def _resize(img: Image.Image, r: random.Random) -> tuple[Image.Image, str]:
    f = r.uniform(0.4, 0.9)
    size = (max(1, round(img.width * f)), max(1, round(img.height * f)))
    return img.resize(size, Image.Resampling.LANCZOS), f"f={f:.2f}"


def _crop_side(img: Image.Image, r: random.Random) -> tuple[Image.Image, str]:
    f, edge = r.uniform(0.03, 0.10), r.choice("LRTB")
    dx, dy = round(img.width * f), round(img.height * f)
    box = {"L": (dx, 0, img.width, img.height), "R": (0, 0, img.width - dx, img.height),
           "T": (0, dy, img.width, img.height), "B": (0, 0, img.width, img.height - dy)}[edge]
    return img.crop(box), f"f={f:.2f},{edge}"


def _crop_all(img: Image.Image, r: random.Random) -> tuple[Image.Image, str]:
    f = r.uniform(0.03, 0.10)
    dx, dy = round(img.width * f / 2), round(img.height * f / 2)
    return img.crop((dx, dy, img.width - dx, img.height - dy)), f"f={f:.2f}"


def _enhance(kind: type[ImageEnhance._Enhance]) -> Callable[[Image.Image, random.Random], tuple[Image.Image, str]]:
    def apply(img: Image.Image, r: random.Random) -> tuple[Image.Image, str]:
        k = 1 + r.choice((-1, 1)) * r.uniform(0.05, 0.15)
        return kind(img).enhance(k), f"k={k:.2f}"

    return apply


def _rotate(img: Image.Image, r: random.Random) -> tuple[Image.Image, str]:
    a = r.choice((-1, 1)) * r.uniform(0.5, 3.0)
    return img.rotate(a, resample=Image.Resampling.BICUBIC, expand=False), f"deg={a:.2f}"


def _overlay(img: Image.Image, r: random.Random) -> tuple[Image.Image, str]:
    out = img.convert("RGBA")
    layer = Image.new("RGBA", out.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    text = f"(c) studio {r.randrange(1000, 9999)}"
    if r.random() < 0.5:  # caption in a corner, opaque
        font = ImageFont.load_default(size=max(8, round(img.height * r.uniform(0.05, 0.09))))
        x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
        m = round(img.height * 0.03)
        x = m if r.random() < 0.5 else img.width - (x1 - x0) - m
        y = m if r.random() < 0.5 else img.height - (y1 - y0) - m
        draw.text((x - x0, y - y0), text, font=font, fill=(255, 255, 255, 255), stroke_width=1,
                  stroke_fill=(0, 0, 0, 255))
        how = "caption"
    else:  # watermark across the middle, semi-transparent
        font = ImageFont.load_default(size=max(8, round(img.width / len(text) * 1.6)))
        alpha = round(255 * r.uniform(0.3, 0.6))
        draw.text((img.width / 2, img.height / 2), text, font=font, fill=(255, 255, 255, alpha), anchor="mm")
        how = f"watermark,a={alpha / 255:.2f}"
    return Image.alpha_composite(out, layer).convert(img.mode), how


_APPLY: dict[str, Callable[[Image.Image, random.Random], tuple[Image.Image, str]]] = {
    "resize": _resize, "crop_side": _crop_side, "crop_all": _crop_all, "rotate": _rotate, "overlay": _overlay,
    "brightness": _enhance(ImageEnhance.Brightness), "contrast": _enhance(ImageEnhance.Contrast),
    "gray": lambda img, r: (img.convert("L"), ""),
}


def _save(img: Image.Image, path: Path, **kw: object) -> None:
    buf = io.BytesIO()
    img.save(buf, **kw)
    path.write_bytes(buf.getvalue())


def _copy(img: Image.Image, r: random.Random, out: Path) -> tuple[Path, str]:
    exif = Image.Exif()
    exif[0x0131], exif[0x013B] = "dupkit re-save", f"artist {r.randrange(1000)}"  # Software, Artist
    fmt = r.choice(("TIFF", "WEBP", "PNG"))
    path = out.with_suffix({"TIFF": ".tif", "WEBP": ".webp", "PNG": ".png"}[fmt])
    kw = {"lossless": True} if fmt == "WEBP" else {"compression": "tiff_adobe_deflate"} if fmt == "TIFF" else {}
    _save(img, path, format=fmt, exif=exif.tobytes(), **kw)
    return path, fmt


def variants(src: Path, out_dir: Path, seed: int, transforms: Sequence[str] = TRANSFORMS,
             lookalike: bool = False) -> list[Item]:
    """The original (as decoded by iqaflow) plus its variants, written under ``out_dir``."""
    pixels = decode(src.read_bytes()).pixels
    img = Image.fromarray(pixels)
    stem = src.stem
    items = [Item(str(src), stem, stem, "original", "")]
    for t in transforms:
        r = _rng(seed, stem, t)
        out = out_dir / f"{stem}__{t}"
        if t == "copy":
            path, param = _copy(img, r, out)
        elif t == "jpeg":
            q = r.randint(40, 95)
            path, param = out.with_suffix(".jpg"), f"q={q}"
            _save(img, path, format="JPEG", quality=q)
        else:
            var, param = _APPLY[t](img, r)
            path = out.with_suffix(".png")
            _save(var, path, format="PNG", compress_level=1)
        items.append(Item(str(path), stem, stem, t, param))
    if lookalike:
        r = _rng(seed, stem, "lookalike")
        horizontal = r.random() < 0.5
        for k, off in enumerate((0.0, 0.4)):
            w, h = img.size
            box = ((round(w * off), 0, round(w * (off + 0.6)), h) if horizontal else
                   (0, round(h * off), w, round(h * (off + 0.6))))
            path = out_dir / f"{stem}__lookalike{k}.png"
            _save(img.crop(box), path, format="PNG", compress_level=1)
            items.append(Item(str(path), f"{stem}~{k}", stem, "lookalike", f"box={box}"))
    return items


def build_set(originals: Sequence[Path], out_dir: Path, seed: int = 0, transforms: Sequence[str] = TRANSFORMS,
              lookalike_every: int = 2) -> list[Item]:
    """Variants of every original under ``out_dir``; reused when ``out_dir`` holds the same set already."""
    key = {"version": _VERSION, "seed": seed, "transforms": list(transforms), "lookalike_every": lookalike_every,
           "originals": [str(p) for p in originals]}
    manifest = out_dir / "manifest.json"
    if manifest.exists():
        saved = json.loads(manifest.read_text())
        if saved["key"] == key:
            return [Item(**row) for row in saved["items"]]
    out_dir.mkdir(parents=True, exist_ok=True)
    items = [it for i, src in enumerate(originals)
             for it in variants(src, out_dir, seed, transforms, lookalike_every > 0 and i % lookalike_every == 0)]
    manifest.write_text(json.dumps({"key": key, "items": [asdict(it) for it in items]}))
    return items


def sample(folder: Path, n: int, seed: int) -> list[Path]:
    """A seeded sample of ``n`` image files of ``folder`` (sorted names, then shuffled)."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".tif"))
    return sorted(random.Random(seed).sample(files, min(n, len(files))))


def drop_same_photo(paths: Sequence[Path], max_mad: float = 12 / 255) -> list[Path]:
    """Keep one of every group of originals that are the same photograph (BIQ2021 holds some twice).

    Labelling, independent of any hash: 64x64 RGB thumbnails whose mean absolute difference is under
    ``max_mad`` (on [0, 1]) are the same photo, possibly re-processed; the first in order is kept.
    """
    thumbs = np.stack([np.asarray(Image.fromarray(decode(p.read_bytes()).pixels).convert("RGB")
                                  .resize((64, 64), Image.Resampling.BOX), dtype=np.float32) / 255 for p in paths])
    flat = thumbs.reshape(len(paths), -1)
    keep: list[int] = []
    for i in range(len(paths)):
        if not keep or np.abs(flat[keep] - flat[i]).mean(axis=1).min() >= max_mad:
            keep.append(i)
    return [paths[i] for i in keep]


def pair_metrics(items: Sequence[Item], same: np.ndarray, transforms: Sequence[str] = TRANSFORMS) -> dict:
    """Recall per transformation and pairwise precision of a predicted ``same`` (n x n bool) matrix.

    Recall of t: the share of (original, t-variant) pairs predicted the same. Precision: among all
    predicted pairs of distinct items, the share with one identity; ``precision`` over every item but
    the APART variants, ``precision_by`` over the originals, look-alikes and t's variants only.
    """
    ident = np.array([it.identity for it in items])
    kind = np.array([it.transform for it in items])
    truth = ident[:, None] == ident[None, :]
    upper = np.triu(np.ones_like(truth), 1)
    index = {(it.source, it.transform): i for i, it in enumerate(items)}
    out: dict = {"recall": {}, "precision_by": {}}
    for t in transforms:
        pairs = [(index[(it.source, "original")], i) for i, it in enumerate(items) if it.transform == t]
        out["recall"][t] = float(np.mean([same[a, b] for a, b in pairs])) if pairs else float("nan")
        out["precision_by"][t] = _precision(same, truth, upper, np.isin(kind, ("original", "lookalike", t)))
    out["precision"] = _precision(same, truth, upper, ~np.isin(kind, APART))
    near = [t for t in transforms if t in NEAR]
    out["recall_near"] = float(np.mean([out["recall"][t] for t in near])) if near else float("nan")
    out["false_pairs"] = int((same & ~truth & upper & np.outer(~np.isin(kind, APART), ~np.isin(kind, APART))).sum())
    return out


def _precision(same: np.ndarray, truth: np.ndarray, upper: np.ndarray, mask: np.ndarray) -> float:
    sel = same & upper & np.outer(mask, mask)
    n = int(sel.sum())
    return float((sel & truth).sum() / n) if n else 1.0
