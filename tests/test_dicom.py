"""DICOM intake: the display pipeline against the standard's formulas, transfer syntaxes, discovery of
extension-less files, and PHI safety of a real run (no output, log line or MLflow record carries the
patient's name or ID)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from medkit import PATIENT_ID, PATIENT_NAME, dicom_bytes, gdcm_transcode, phantom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import JPEG2000Lossless, RLELossless
from scipy.ndimage import gaussian_filter

from iqaflow.schemas.results import Col, ErrorCode
from iqaflow.tasks.decode import DecodeFailure, decode, sniff_medical
from iqaflow.tasks.decode.dicom import phi_tokens, scrub
from iqaflow.tasks.io.discover import write_manifest
from iqaflow.tasks.score.domain import DomainSettings
from iqaflow.tasks.score.phi import keyed_id, path_names_patient
from iqaflow.tasks.score.shard import score_members

RAMP = (np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) % 4096).astype(np.uint16)
SECRETS = (PATIENT_NAME.encode(), PATIENT_ID.encode())


def window_ref(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1, written out: below, above, and the linear ramp between, onto [0, 1]."""
    lo, hi = c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2
    return np.where(x <= lo, 0.0, np.where(x > hi, 1.0, (x - (c - 0.5)) / (w - 1) + 0.5))


def test_rescale_then_window_follow_the_standard() -> None:
    d = decode(dicom_bytes(RAMP, RescaleSlope=2, RescaleIntercept=-1024, WindowCenter=40, WindowWidth=400))
    expected = window_ref(RAMP * 2.0 - 1024, 40, 400)
    np.testing.assert_allclose(d.pixels, expected, atol=1e-6)
    assert (d.format, d.mode, d.bit_depth, d.n_frames, d.frames) == ("DICOM", "F", 12, 1, None)
    assert d.medical is not None and d.medical.modality == "MR" and d.medical.photometric == "MONOCHROME2"


def test_monochrome1_is_inverted_and_no_window_uses_the_range() -> None:
    m2 = decode(dicom_bytes(RAMP)).pixels
    m1 = decode(dicom_bytes(RAMP, photometric="MONOCHROME1")).pixels
    np.testing.assert_allclose(m1, 1.0 - m2, atol=1e-6)
    hi = np.percentile(RAMP[::4, ::4], 99.9)
    np.testing.assert_allclose(m2, np.clip(RAMP / hi, 0, 1), atol=1e-6)


def test_voi_lut_sequence_and_enhanced_multiframe_groups() -> None:
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.LUTData = (np.arange(4096) * 16).astype("<u2").tobytes()  # OW
    d = decode(dicom_bytes(RAMP, VOILUTSequence=Sequence([item])))
    np.testing.assert_allclose(d.pixels, RAMP * 16 / 65535, atol=1e-6)

    frames = np.stack([RAMP, RAMP // 2, RAMP // 4]).astype(np.uint16)
    shared, pvt, voi = Dataset(), Dataset(), Dataset()
    pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = 0.5, 100, "US"
    voi.WindowCenter, voi.WindowWidth = 600, 800
    shared.PixelValueTransformationSequence = Sequence([pvt])
    shared.FrameVOILUTSequence = Sequence([voi])
    d = decode(dicom_bytes(frames, SharedFunctionalGroupsSequence=Sequence([shared])), max_frames=3)
    assert d.n_frames == 3 and d.frames is not None and d.frames.shape == (3, 48, 64)
    for got, raw in zip(d.frames, frames, strict=True):
        np.testing.assert_allclose(got, window_ref(raw * 0.5 + 100, 600, 800), atol=1e-6)
    np.testing.assert_array_equal(d.pixels, d.frames[1])  # the middle frame


@pytest.mark.parametrize("syntax", [None, RLELossless, JPEG2000Lossless], ids=["native", "rle", "j2k-lossless"])
def test_multiframe_decodes_the_same_in_every_transfer_syntax(syntax: str | None) -> None:
    vol = np.stack([RAMP + 10 * i for i in range(12)]).astype(np.uint16)
    d = decode(dicom_bytes(vol, syntax, WindowCenter=2048, WindowWidth=4096), max_frames=4)
    assert d.n_frames == 12 and d.frames is not None and len(d.frames) == 4
    np.testing.assert_allclose(d.pixels, window_ref(vol[6].astype(float), 2048, 4096), atol=1e-6)


@pytest.mark.parametrize("syntax", ["jpeg-lossless", "jpeg-ls"])
def test_lossless_jpeg_syntaxes_decode_through_gdcm(syntax: str, tmp_path: Path) -> None:
    data = gdcm_transcode(dicom_bytes(RAMP, WindowCenter=2048, WindowWidth=4096), syntax, str(tmp_path))
    assert b"1.2.840.10008.1.2.4.70" in data[:1000] or b"1.2.840.10008.1.2.4.80" in data[:1000]
    np.testing.assert_allclose(decode(data).pixels, window_ref(RAMP.astype(float), 2048, 4096), atol=1e-6)


def test_rgb_dicom() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (32, 40, 3), dtype=np.uint8)
    d = decode(dicom_bytes(rgb, modality="XC", bits_stored=8))
    assert d.mode == "RGB" and d.pixels.shape == (32, 40, 3)
    np.testing.assert_allclose(d.pixels, rgb / 255.0, atol=1e-6)


def test_broken_files_are_codes_and_messages_carry_no_phi() -> None:
    data = dicom_bytes(RAMP)
    with pytest.raises(DecodeFailure) as exc:
        decode(data[:-500])
    assert exc.value.code == ErrorCode.TRUNCATED
    no_pixels = dicom_bytes(RAMP)
    cut = no_pixels.rfind(b"\xe0\x7f\x10\x00")  # (7FE0,0010) Pixel Data: drop it and what follows
    with pytest.raises(DecodeFailure) as exc:
        decode(no_pixels[:cut])
    assert exc.value.code == ErrorCode.NOT_AN_IMAGE
    assert scrub(f"bad value {PATIENT_NAME} / doe / {PATIENT_ID}", phi_tokens(PATIENT_NAME, PATIENT_ID)) == \
        "bad value [redacted] / [redacted] / [redacted]"


def test_paths_naming_the_patient_are_caught() -> None:
    tokens = phi_tokens(PATIENT_NAME, PATIENT_ID)
    for uri in ("/in/DOE_JANE/1.dcm", "/in/jane/x.dcm", "/in/doe-jane.dcm", "/in/PHI-123456/a", "s3://b/Doe Jane/a"):
        assert path_names_patient(uri, tokens), uri
    for uri in ("/in/study7/1.dcm", "/in/janet/x.dcm", "/in/doesnt/x.dcm"):
        assert not path_names_patient(uri, tokens), uri


def test_keyed_ids_depend_on_key_uid_and_path() -> None:
    a = keyed_id(b"k1", "1.2.3", "/x/a.dcm")
    assert len(a) == 32 and a == keyed_id(b"k1", "1.2.3", "/x/a.dcm")
    assert len({a, keyed_id(b"k2", "1.2.3", "/x/a.dcm"), keyed_id(b"k1", "1.2.4", "/x/a.dcm"),
                keyed_id(b"k1", "1.2.3", "/x/b.dcm")}) == 4


def test_extensionless_files_are_found_by_their_magic(tmp_path: Path) -> None:
    (tmp_path / "series").mkdir()
    (tmp_path / "series" / "IM000001").write_bytes(dicom_bytes(RAMP))
    (tmp_path / "series" / "1.2.840.99.1").write_bytes(dicom_bytes(RAMP))  # UID-named
    (tmp_path / "series" / "DICOMDIR").write_bytes(dicom_bytes(RAMP))
    (tmp_path / "series" / "README").write_text("not an image")
    (tmp_path / "series" / "a.dcm").write_bytes(dicom_bytes(RAMP))
    assert sniff_medical((tmp_path / "series" / "IM000001").read_bytes()) == "dicom"

    def listed(sniff: bool) -> list[str]:
        out = tmp_path / f"m{sniff}.parquet"
        write_manifest(str(tmp_path), str(out), 10, [".dcm"], sniff_extensionless=sniff)
        return sorted(Path(u).name for u in pq.read_table(out)[Col.URI].to_pylist())

    assert listed(False) == ["a.dcm"]
    assert listed(True) == ["1.2.840.99.1", "IM000001", "a.dcm"]


def test_score_members_phi_in_path_and_keyed_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from iqaflow.models.registry import create_scorer

    monkeypatch.setenv("IQAFLOW_PHI_KEY", "test-key")
    img, _ = phantom(seed=3)
    data = dicom_bytes((img * 3000).astype(np.uint16))
    ok, bad = tmp_path / "s1" / "0001.dcm", tmp_path / "DOE_JANE" / "0001.dcm"
    for p in (ok, bad):
        p.parent.mkdir()
        p.write_bytes(data)
    table = score_members([str(ok), str(bad)], [None, None], [create_scorer("snrd")], "s",
                          domain=DomainSettings()).to_pylist()
    assert table[0][Col.ERROR_CODE] is None and table[0]["snrd"] > 10
    assert table[1][Col.ERROR_CODE] == ErrorCode.PHI_IN_PATH.value and table[1]["snrd"] is not None
    from pydicom import dcmread

    uid = str(dcmread(ok).SOPInstanceUID)
    assert table[0][Col.IMAGE_ID] == keyed_id(b"test-key", uid, str(ok))
    assert table[0][Col.MODALITY] == "MR" and table[0][Col.FRAMES] == 1
    plain = score_members([str(ok)], [None], [create_scorer("snrd")], "s", domain=DomainSettings(phi_safe=False))
    assert plain[Col.IMAGE_ID][0].as_py() != table[0][Col.IMAGE_ID]


@pytest.fixture
def intake(tmp_path: Path) -> Path:
    """An intake folder: MR slices (clean, MONOCHROME1 + window, multi-frame RLE), a CT, a noisy MR, an
    extension-less file, a truncated file. Every file names DOE^JANE / PHI-123456 in its header."""
    src = tmp_path / "intake" / "study1"
    src.mkdir(parents=True)
    clean, _ = phantom(size=96, sigma=0.01, seed=1)
    noisy, _ = phantom(size=96, sigma=0.12, seed=2)
    as16 = (clean * 3000).astype(np.uint16)
    (src / "mr1.dcm").write_bytes(dicom_bytes(as16))
    # MONOCHROME1 stores white as the minimum: the same image stored inverted, then windowed.
    (src / "mr2.dcm").write_bytes(dicom_bytes((3500 - as16.astype(int)).clip(0).astype(np.uint16),
                                              photometric="MONOCHROME1", WindowCenter=1750, WindowWidth=3500))
    (src / "mr3.dcm").write_bytes(dicom_bytes(np.stack([as16] * 5), RLELossless))
    (src / "ct1.dcm").write_bytes(dicom_bytes(as16, modality="CT", RescaleSlope=1, RescaleIntercept=-1024))
    (src / "noisy.dcm").write_bytes(dicom_bytes((noisy * 3000).astype(np.uint16)))
    (src / "blurred.dcm").write_bytes(dicom_bytes((gaussian_filter(clean, 3) * 3000).astype(np.uint16)))
    (src / "IM0007").write_bytes(dicom_bytes(as16))
    (src / "broken.dcm").write_bytes(dicom_bytes(as16)[:-900])
    return tmp_path / "intake"


def _grep(root: Path, needles: tuple[bytes, ...], inputs: set[bytes]) -> list[str]:
    """Files under ``root`` holding a needle (any case), except byte-for-byte copies of the input files
    (routing moves rejected DICOMs into quarantine: they are the inputs, not something iqaflow wrote)."""
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            if data in inputs:
                continue
            hits += [f"{path}: {n!r}" for n in needles if n in data or n.lower() in data.lower()]
    return hits


@pytest.mark.slow
def test_phi_never_reaches_outputs_logs_or_mlflow(prefect_api: None, intake: Path, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture,
                                                  capfd: pytest.CaptureFixture[str]) -> None:
    from iqaflow.config.run import build_config
    from iqaflow.errors import GateFailed
    from iqaflow.flows.score import run_score

    examples = Path(__file__).resolve().parent.parent / "examples"
    out = tmp_path / "out"
    cfg = build_config({
        "source": str(intake), "out": str(out), "models": ["snrd", "noise_air", "fwhm", "sharpness"],
        "workers": 1, "shard_size": 4, "sniff_extensionless": True, "volume_slices": 3,
        "gates": str(examples / "medical_intake_dicom.yaml"), "apply_routing": True,
    })
    caplog.set_level("INFO")
    inputs = {p.read_bytes() for p in intake.rglob("*") if p.is_file()}
    os.environ.pop("IQAFLOW_PHI_KEY", None)
    try:
        run_score(cfg)
    except GateFailed:
        pass  # the batch has a broken file and a CT: failing the collection gate is allowed; outputs must exist
    runs = list((out / "runs").iterdir())
    assert len(runs) == 1
    rows = {Path(r[Col.URI]).name: r for r in pq.read_table(runs[0] / "results").to_pylist()}
    assert set(rows) == {"mr1.dcm", "mr2.dcm", "mr3.dcm", "ct1.dcm", "noisy.dcm", "blurred.dcm", "IM0007",
                         "broken.dcm"}
    assert rows["mr3.dcm"][Col.FRAMES] == 5 and rows["ct1.dcm"][Col.MODALITY] == "CT"
    assert rows["broken.dcm"][Col.ERROR_CODE] == ErrorCode.TRUNCATED.value
    assert all(len(r[Col.IMAGE_ID]) == 32 for r in rows.values() if r[Col.ERROR_CODE] is None)
    assert (out / "phi.key").is_file() and (out / "phi.key").stat().st_mode & 0o077 == 0
    gates = {name: r[Col.GATE_STATUS] for name, r in rows.items()}
    assert {n for n, g in gates.items() if g == "pass"} == {"mr1.dcm", "mr2.dcm", "mr3.dcm", "IM0007"}
    reasons = {n: r[Col.GATE_REASONS] for n, r in rows.items() if r[Col.GATE_STATUS] == "reject"}
    assert reasons["ct1.dcm"] == ["wrong_modality"] and reasons["noisy.dcm"] == ["too_noisy"]
    assert "too_blurred" in reasons["blurred.dcm"] and "unreadable_or_phi_in_path" in reasons["broken.dcm"]
    quarantined = {p.name for p in (runs[0] / "quarantine").rglob("*") if p.is_file()}
    assert quarantined == {"ct1.dcm", "noisy.dcm", "blurred.dcm", "broken.dcm"}

    # results, manifest, summary, config, gate report, HTML report, MLflow database and artifacts
    assert _grep(out, SECRETS, inputs) == []
    captured = capfd.readouterr()
    text = caplog.text + captured.out + captured.err
    assert text and not [s for s in SECRETS if s.decode() in text or s.decode().lower() in text.lower()]
