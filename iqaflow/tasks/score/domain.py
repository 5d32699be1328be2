"""Domain steps of shard scoring: volumes scored per slice, PHI-safe ids, scans registered to masters,
defect heatmaps. ``tasks.score`` calls these at fixed points; they read and fill its rows.

* Volumes and multi-frame files: the middle slice is scored like any image (NR and FR); with
  ``volume_slices > 1`` the NR scorers also run on up to that many slices spread over the central
  80% of the volume, and each NR column becomes their mean, or the worst slice's values
  (``volume_reduce: worst``: the slice with the lowest main score, or highest where lower is better;
  that slice's extra outputs come along with it).
* Print audits: with ``align`` set, an image whose size differs from its reference (or any image,
  since a scan is never pixel-exact) is registered onto it; both are cropped to the overlap and
  every scorer, NR and FR, sees the pair in the master's frame. A failed registration is a row
  error (REGISTRATION_FAILED); NR scores of the unregistered scan are kept.
* Heatmaps: for pairs whose worst region (``ssim_worst``'s square, 1/8 of the short side) has a mean
  local SSIM below ``heatmap_below``, a PNG of 1 - SSIM over the master (that region boxed) goes to
  ``heatmap_dir/<image_id>.png``: a local defect flags a page that its mean SSIM would hide.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import cv2
import numpy as np

from iqaflow.models.base import Scorer
from iqaflow.models.classical.fr import region_size, ssim_map, worst_region
from iqaflow.models.colour import convert
from iqaflow.models.printing.registration import RegistrationError, align, overlap_box
from iqaflow.schemas.results import ErrorCode
from iqaflow.tasks.io.storage import atomic_write, join, open_fs
from iqaflow.tasks.score.phi import keyed_id, path_names_patient, resolve_key

if TYPE_CHECKING:
    from iqaflow.tasks.decode import Decoded

log = logging.getLogger(__name__)

HEATMAP_MAX_SIDE = 1024


@dataclass(frozen=True)
class DomainSettings:
    volume_slices: int = 1  # slices of a volume scored by NR scorers; 1: the middle slice only
    volume_reduce: Literal["mean", "worst"] = "mean"
    phi_safe: bool = True
    phi_key_home: str | None = None  # folder of phi.key when $IQAFLOW_PHI_KEY is unset
    align: Literal["none", "homography", "tiles", "ecc"] = "none"
    heatmap_dir: str | None = None
    heatmap_below: float | None = None
    print_inspect: bool = False  # defects of each scan against its master (print_pages)
    print_dpi: float | None = None  # the masters' resolution; None: each master file's own
    defects_dir: str | None = None  # where the shard's defect rows go (runs/RUN_ID/defects)


@dataclass(frozen=True)
class AlignInfo:
    inliers: int
    rmse: float
    correlation: float | None
    overlap: float
    origin: tuple[int, int] = (0, 0)  # (x, y) of the overlap crop in the master's pixels


def medical_image_id(uri: str, decoded: Decoded | None, settings: DomainSettings) -> str | None:
    """The keyed id of a medical file in a PHI-safe run; None for anything else (plain ids apply)."""
    if not settings.phi_safe or decoded is None or decoded.medical is None:
        return None
    return keyed_id(resolve_key(settings.phi_key_home), decoded.medical.instance_uid, uri)


def phi_in_path(uri: str, decoded: Decoded | None, settings: DomainSettings) -> bool:
    if not settings.phi_safe or decoded is None or decoded.medical is None or not decoded.medical.phi_tokens:
        return False
    return path_names_patient(uri, decoded.medical.phi_tokens)


def register_pair(img: Decoded, ref_pixels: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray, AlignInfo]:
    """(scan in the master's frame, master, both cropped to the overlap; what the registration found)."""
    scan, master, reg, overlap = align(img.pixels, ref_pixels, method if method in ("tiles", "ecc") else "homography")
    x0, y0, _, _ = overlap_box(reg.homography, img.pixels.shape, ref_pixels.shape)
    return scan, master, AlignInfo(reg.inliers, reg.rmse, reg.correlation, overlap, (x0, y0))


def _reduce(values: np.ndarray, mode: str, higher_is_better: bool) -> np.ndarray:
    """(slices, outputs) -> (outputs,): column means, or the row of the worst slice by the main output."""
    if mode == "mean":
        with np.errstate(all="ignore"):
            return np.nanmean(np.where(np.isfinite(values), values, np.nan), axis=0)
    main = np.where(np.isfinite(values[:, 0]), values[:, 0], np.nan)
    if np.all(np.isnan(main)):
        return values[0]
    return values[int(np.nanargmin(main) if higher_is_better else np.nanargmax(main))]


def score_slices(rows: Sequence[Any], scorers: Sequence[Scorer], settings: DomainSettings) -> None:
    """Replace the NR scores of rows holding several slices by their per-slice aggregate."""
    if settings.volume_slices <= 1:
        return
    for r in rows:
        frames = r.decoded.frames if r.decoded is not None else None
        if frames is None or len(frames) < 2:
            continue
        for scorer in scorers:
            if scorer.info.kind != "nr" or not all(o in r.scores for o in scorer.info.outputs):
                continue
            try:
                images = [convert(f, scorer.info.colour) for f in frames]
                values = np.asarray(scorer.score(images), dtype=np.float64)
            except Exception as exc:  # the middle slice's score stands; the row says why the rest is missing
                r.fail(ErrorCode.SCORE_ERROR, f"{scorer.info.name} on slices: {type(exc).__name__}: {exc}")
                continue
            reduced = _reduce(values, settings.volume_reduce, scorer.info.higher_is_better)
            r.scores.update(zip(scorer.info.outputs, (float(v) for v in reduced), strict=True))


def heatmap_png(scan: np.ndarray, master: np.ndarray) -> tuple[bytes, float]:
    """(PNG bytes, worst-region local SSIM): 1 - SSIM (inferno colour map) over the gray master, worst region boxed."""
    g_scan, g_master = convert(scan, "gray"), convert(master, "gray")
    smap = ssim_map(g_scan, g_master)
    worst, x0, y0, x1, y1 = worst_region(smap, region_size(*smap.shape))
    damage = np.clip(1.0 - smap, 0.0, 1.0)
    colour = cv2.applyColorMap((damage * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)
    base = cv2.cvtColor((g_master * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
    out = cv2.addWeighted(colour, 0.7, base, 0.3, 0.0)
    cv2.rectangle(out, (int(x0), int(y0)), (int(x1) - 1, int(y1) - 1), (255, 255, 0), 2)
    scale = min(1.0, HEATMAP_MAX_SIDE / max(out.shape[:2]))
    if scale < 1.0:
        out = cv2.resize(out, (round(out.shape[1] * scale), round(out.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    return encode_png(out), worst


def encode_png(bgr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", bgr)
    if not ok:
        raise ValueError("PNG encoding of the heatmap failed")
    return buf.tobytes()


def write_pngs(rows: Sequence[Any], ids: Sequence[str], heatmap_dir: str,
               render: Callable[[Any], bytes | None]) -> None:
    """Write ``heatmap_dir/IMAGE_ID.png`` for each row ``render`` draws (None: no heatmap for that row) and
    point the row's ``heatmap_uri`` at it. A heatmap is a by-product: a failure only warns."""
    fs, folder = open_fs(heatmap_dir)
    for r, image_id in zip(rows, ids, strict=True):
        try:
            png = render(r)
            if png is None:
                continue
            atomic_write(fs, join(folder, f"{image_id}.png"), png)
            r.heatmap_uri = join(heatmap_dir, f"{image_id}.png")
        except Exception as exc:
            log.warning("image %s: heatmap not written (%s: %s)", image_id, type(exc).__name__, exc)


def write_heatmaps(rows: Sequence[Any], ids: Sequence[str], settings: DomainSettings) -> None:
    """Write a heatmap for each row with a usable reference whose worst region's SSIM is below the threshold."""
    if settings.heatmap_dir is None or settings.heatmap_below is None:
        return
    below = settings.heatmap_below

    def render(r: Any) -> bytes | None:
        if r.decoded is None or r.ref_pixels is None or r.decoded.pixels.shape[:2] != r.ref_pixels.shape[:2]:
            return None
        png, worst = heatmap_png(r.decoded.pixels, r.ref_pixels)
        return png if worst < below else None

    write_pngs(rows, ids, settings.heatmap_dir, render)


def align_row(row: Any, ref_pixels: np.ndarray, settings: DomainSettings) -> None:
    """Register ``row``'s image onto its reference; on success both become the overlap crops."""
    try:
        scan, master, info = register_pair(row.decoded, ref_pixels, settings.align)
    except (RegistrationError, cv2.error, ValueError) as exc:
        row.fail(ErrorCode.REGISTRATION_FAILED, f"reference {row.reference_uri}: {exc}")
        return
    row.decoded.pixels, row.ref_pixels, row.align = scan, master, info
