"""NIfTI intake: orientation, intensity range, 4D series, and per-slice scoring with aggregation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from medkit import nifti_bytes, phantom

from iqaflow.models.colour import convert
from iqaflow.models.registry import create_scorer
from iqaflow.schemas.results import Col, ErrorCode
from iqaflow.tasks.decode import DecodeFailure, decode, slice_indices, sniff_medical
from iqaflow.tasks.score.domain import DomainSettings
from iqaflow.tasks.score.shard import score_members

RNG = np.random.default_rng(0)
VOLUME = (RNG.random((40, 50, 30)) * 1000).astype(np.float32)


@pytest.mark.parametrize("gz", [False, True], ids=["nii", "nii.gz"])
def test_axial_slices_in_canonical_orientation(gz: bool) -> None:
    data = nifti_bytes(VOLUME, np.diag([2.0, 2.0, 3.0, 1.0]), gz=gz)
    assert sniff_medical(data) == "nifti"
    d = decode(data, max_frames=6)
    assert (d.format, d.mode, d.n_frames, d.width, d.height) == ("NIfTI", "F", 30, 40, 50)
    sample = VOLUME[::2, ::2, :].astype(np.float64)  # decode estimates the range on every other voxel in x, y
    lo, hi = sample.min(), np.percentile(sample, 99.9)
    expected = np.clip((np.rot90(VOLUME[:, :, 15]) - lo) / (hi - lo), 0, 1)  # x across, anterior at the top
    np.testing.assert_allclose(d.pixels, expected, atol=1e-5)
    assert d.frames is not None and len(d.frames) == 6
    np.testing.assert_allclose(d.frames[0], np.clip((np.rot90(VOLUME[:, :, slice_indices(30, 6)[0]]) - lo) /
                                                    (hi - lo), 0, 1), atol=1e-5)


def test_orientation_does_not_depend_on_the_stored_axis_order() -> None:
    ras = decode(nifti_bytes(VOLUME, np.diag([2.0, 2.0, 3.0, 1.0])))
    flipped = np.diag([-2.0, 2.0, 3.0, 1.0])  # x stored right-to-left
    flipped[0, 3] = 2.0 * 39
    las = decode(nifti_bytes(VOLUME[::-1].copy(), flipped))
    np.testing.assert_allclose(ras.pixels, las.pixels, atol=1e-6)


def test_4d_series_scores_its_first_volume_and_truncation_is_a_code() -> None:
    series = np.stack([VOLUME, VOLUME * 0 + 5], axis=-1)
    d = decode(nifti_bytes(series))
    assert d.n_frames == 30 and d.pixels.std() > 0.1  # the first volume, not the flat second one
    with pytest.raises(DecodeFailure) as exc:
        decode(nifti_bytes(VOLUME, gz=True)[:5000])
    assert exc.value.code in (ErrorCode.TRUNCATED, ErrorCode.DECODE_ERROR)


def _volume_file(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A volume whose slices grow noisier with z, so mean and worst aggregation differ."""
    slices = [phantom(size=64, sigma=0.005 + 0.004 * z, seed=z)[0] for z in range(20)]
    vol = np.stack([np.rot90(s, -1) for s in slices], axis=-1).astype(np.float32)  # decode's rot90 undoes this
    path = tmp_path / "sub-01_T1w.nii.gz"
    path.write_bytes(nifti_bytes(vol, gz=True))
    return path, vol


@pytest.mark.parametrize("reduce", ["mean", "worst"])
def test_volume_scored_per_slice_then_aggregated(tmp_path: Path, reduce: str) -> None:
    path, _ = _volume_file(tmp_path)
    scorer = create_scorer("noise_air")
    domain = DomainSettings(volume_slices=5, volume_reduce=reduce)  # type: ignore[arg-type]
    row = score_members([str(path)], [None], [scorer], "s", domain=domain).to_pylist()[0]
    frames = decode(path.read_bytes(), max_frames=5).frames
    assert frames is not None and len(frames) == 5
    per_slice = scorer.score([convert(f, "gray") for f in frames])[:, 0]
    expected = per_slice.mean() if reduce == "mean" else per_slice.max()  # noise: lower is better
    assert row["noise_air"] == pytest.approx(expected, rel=1e-9)
    assert row[Col.FRAMES] == 20 and row[Col.FORMAT] == "NIfTI" and row[Col.ERROR_CODE] is None
    middle = score_members([str(path)], [None], [scorer], "s", domain=DomainSettings()).to_pylist()[0]
    assert middle["noise_air"] == pytest.approx(scorer.score([decode(path.read_bytes()).pixels])[0, 0])
