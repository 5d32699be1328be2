"""Synthetic distortions at graded levels, and generated sample collections.

Used by the demo, the tests and (later) ranking pre-training and synthetic benchmarks. The
distortion functions are pure: uint8 RGB in, uint8 RGB out (JPEG returns encoded bytes too).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

# Sources shipped inside scikit-image's wheel (no download needed).
SKIMAGE_SOURCES = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field")


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(img, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)


def noise(img: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = img.astype(np.float32) + rng.normal(0.0, sigma, img.shape).astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def jpeg_bytes(img: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg_bytes(img, quality))).convert("RGB"))


def exposure(img: np.ndarray, gain: float) -> np.ndarray:
    """Multiply linear-ish intensity by ``gain`` (<1 under-, >1 over-exposed), clipping like a sensor."""
    return np.clip(img.astype(np.float32) * gain, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Distortion:
    name: str
    levels: tuple[float, ...]
    apply: Callable[[np.ndarray, float], np.ndarray]


DEMO_DISTORTIONS: tuple[Distortion, ...] = (
    Distortion("blur", (1.0, 2.5, 5.0), blur),
    Distortion("noise", (8.0, 20.0, 40.0), noise),
    Distortion("jpeg", (40, 15, 5), jpeg),
    Distortion("under", (0.45, 0.2), exposure),
    Distortion("over", (1.8, 3.0), exposure),
)


def skimage_images() -> dict[str, np.ndarray]:
    from skimage import data

    out = {}
    for name in SKIMAGE_SOURCES:
        img = getattr(data, name)()
        out[name] = img[:, :, :3] if img.ndim == 3 else np.stack([img] * 3, axis=2)
    return out


def random_crops(images: dict[str, np.ndarray], n: int, size: int, seed: int) -> list[tuple[str, np.ndarray]]:
    """``n`` crops of ``size``x``size`` cycling over the sources, at seeded positions."""
    rng = np.random.default_rng(seed)
    names = sorted(images)
    crops = []
    for i in range(n):
        name = names[i % len(names)]
        img = images[name]
        h, w = img.shape[:2]
        s = min(size, h, w)
        y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        crops.append((f"{name}-{i:03d}", np.ascontiguousarray(img[y : y + s, x : x + s])))
    return crops


def _save_png(path: Path, img: np.ndarray) -> None:
    Image.fromarray(img).save(path, format="PNG", compress_level=1)


def write_broken_files(folder: Path, clean_jpeg: bytes) -> list[str]:
    """Three files a real archive contains: an empty file, a truncated JPEG and text named .jpg."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(clean_jpeg[: len(clean_jpeg) // 3])
    (folder / "notes.jpg").write_text("this is a text file with an image extension\n")
    return ["empty.jpg", "truncated.jpg", "notes.jpg"]


def make_collection(root: str | Path, n_bases: int = 15, size: int = 256, seed: int = 0) -> Path:
    """Write a labelled collection: per base crop a clean PNG and every demo distortion level.

    ``root/labels.csv`` lists every file with its base, distortion and level, so tests and
    benchmarks can check scores against the known truth. Broken files live in ``root/broken``.
    """
    root = Path(root)
    rows: list[dict[str, object]] = []
    crops = random_crops(skimage_images(), n_bases, size, seed)
    for b, (base, img) in enumerate(crops):
        folder = root / base.split("-")[0]
        folder.mkdir(parents=True, exist_ok=True)
        _save_png(folder / f"{base}_clean.png", img)
        rows.append({"path": f"{folder.name}/{base}_clean.png", "base": base, "distortion": "clean", "level": 0})
        for d in DEMO_DISTORTIONS:
            for li, level in enumerate(d.levels, start=1):
                rel = f"{folder.name}/{base}_{d.name}{li}"
                if d.name == "jpeg":
                    (root / f"{rel}.jpg").write_bytes(jpeg_bytes(img, int(level)))
                    rel += ".jpg"
                else:
                    out = noise(img, level, seed=seed * 1000 + b) if d.name == "noise" else d.apply(img, level)
                    _save_png(root / f"{rel}.png", out)
                    rel += ".png"
                rows.append({"path": rel, "base": base, "distortion": d.name, "level": li})
    for name in write_broken_files(root / "broken", jpeg_bytes(crops[0][1], 90)):
        rows.append({"path": f"broken/{name}", "base": "", "distortion": "broken", "level": 0})
    with open(root / "labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "base", "distortion", "level"])
        writer.writeheader()
        writer.writerows(rows)
    return root
