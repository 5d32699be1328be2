"""Images shown in the run report: a row's name, status and scores, and its thumbnail fetched on demand."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from iqaflow.tasks.report.plots import thumbnail_jpeg

MEDICAL_FORMATS = frozenset({"DICOM", "NIfTI"})  # decoded formats whose pixels may show a patient


@dataclass
class Image:
    uri: str
    name: str
    status: str
    reasons: list[str]
    scores: dict[str, float | None]
    thumb: str | None = None
    note: str = ""
    kept: bool = False  # duplicate groups: the group's kept image
    distance: int | None = None  # duplicate groups: Hamming distance to the kept image (0: exact)


def _thumb(image: Image) -> Image:
    from iqaflow.tasks.io.read import fetch

    got = fetch(image.uri)
    if got.data is None:
        image.note = f"not readable now: {got.error}"
        return image
    try:
        image.thumb = thumbnail_jpeg(got.data)
    except Exception as exc:  # a report shows what it can; the image's own row says why it is odd
        image.note = f"no thumbnail: {type(exc).__name__}: {exc}"
    return image


def thumbnails(images: list[Image], formats: list[str | None], phi_safe: bool) -> None:
    """Thumbnails in place; medical images in a PHI-safe run get a note instead."""
    todo = []
    for im, fmt in zip(images, formats, strict=True):
        if phi_safe and fmt in MEDICAL_FORMATS:
            im.note = "thumbnail withheld: medical image in a PHI-safe run (phi_safe: false shows it)"
        else:
            todo.append(im)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(_thumb, todo))
