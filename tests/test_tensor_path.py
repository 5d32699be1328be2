"""The shard's tensor path (torchvision decode_jpeg -> TorchScorer.score_tensors) against the CPU path.

Same files, same scorers, both paths: every row must agree on status, error code and the image
metadata columns, and scores within a stated tolerance. On CPU torchvision's libjpeg-turbo and
Pillow's decode these files bit for bit (measured: max pixel difference 0), so scores differ
only by float summation order (batch composition, memory layout): measured below 1e-6 relative to
the score scale; asserted 1e-4. On CUDA nvJPEG's IDCT and chroma upsampling differ from libjpeg
(torchvision's own test allows a mean of 2 grey levels) and inference runs under fp16 autocast,
so scores are asserted within 2e-2 of the score scale (not measured here: no GPU on CI).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from jpegkit import BROKEN_ENTROPY, EXPECTED_TAKEN, make_jpegs

from iqaflow.config.run import build_config
from iqaflow.errors import ConfigError
from iqaflow.models import weights
from iqaflow.models.colour import convert
from iqaflow.models.deep.zoo import Dbcnn, Kang
from iqaflow.models.registry import create_scorer
from iqaflow.models.weights import WeightsStore
from iqaflow.schemas.results import Col
from iqaflow.tasks.decode import decode
from iqaflow.tasks.decode.jpeg_header import exif_orientation, jpeg_header
from iqaflow.tasks.score import gpu as decode_gpu
from iqaflow.tasks.score.gpu import TensorPath, decode_jpegs, libjpeg_accepts
from iqaflow.tasks.score.shard import score_members

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
SCORE_TOL = {"cpu": 1e-4, "cuda": 2e-2}  # of max |score| per scorer; see the module docstring
META = (Col.URI, Col.IMAGE_ID, Col.STATUS, Col.ERROR_CODE, Col.WIDTH, Col.HEIGHT, Col.FORMAT, Col.MODE,
        Col.BIT_DEPTH, Col.BYTES, Col.CONTENT_HASH)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return make_jpegs(tmp_path_factory.mktemp("jpegs"))


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> WeightsStore:
    s = WeightsStore(str(tmp_path / "weights"))
    monkeypatch.setattr(weights, "_store", s)
    Kang.make_test_weights(s, seed=0)
    Dbcnn.make_test_weights(s, seed=0)
    return s


def _scorers(device: str) -> list:
    kang, dbcnn = create_scorer("kang", device), create_scorer("dbcnn", device)
    dbcnn.input_size = (96, 96)  # the same maths at a size a CPU runs in seconds
    return [kang, dbcnn]


def test_header_takes_only_what_the_cpu_path_leaves_as_stored(files: list[Path]) -> None:
    taken = {p.name: jpeg_header(p.read_bytes(), None) is not None for p in files}
    assert taken == EXPECTED_TAKEN
    gray = jpeg_header((files[0].parent / "gray.jpg").read_bytes(), None)
    assert gray is not None and (gray.width, gray.height, gray.mode) == (240, 180, "L")
    assert jpeg_header((files[0].parent / "plain_420.jpg").read_bytes(), max_pixels=300 * 200 - 1) is None


def test_exif_orientation_in_both_byte_orders() -> None:
    def tiff(order: str, value: int) -> bytes:
        head = (b"II*\x00" if order == "little" else b"MM\x00*") + (8).to_bytes(4, order)
        entry = (0x0112).to_bytes(2, order) + (3).to_bytes(2, order) + (1).to_bytes(4, order)
        return head + (1).to_bytes(2, order) + entry + value.to_bytes(2, order) + b"\x00\x00" + bytes(4)

    assert exif_orientation(tiff("little", 6)) == 6 and exif_orientation(tiff("big", 8)) == 8
    with pytest.raises(ValueError):
        exif_orientation(b"XX*\x00")


def test_tensor_decoder_matches_pillow(files: list[Path]) -> None:
    taken = [p for p in files if EXPECTED_TAKEN[p.name] and p.name != "corrupt_scan.jpg"]
    tensors = decode_jpegs([p.read_bytes() for p in taken], "cpu")
    worst = 0
    for p, t in zip(taken, tensors, strict=True):
        assert t is not None, p.name
        ref = decode(p.read_bytes()).pixels.astype(int)
        got = t.permute(1, 2, 0).numpy().astype(int)
        got = got[:, :, 0] if ref.ndim == 2 else got
        worst = max(worst, int(np.abs(got - ref).max()))
    assert worst <= 2, f"decoders differ by up to {worst} grey levels"


def test_libjpeg_check_rejects_broken_entropy_data(files: list[Path]) -> None:
    taken = [p for p in files if EXPECTED_TAKEN[p.name]]
    assert {p.name for p in taken if not libjpeg_accepts(p.read_bytes())} == BROKEN_ENTROPY
    assert not libjpeg_accepts(b"") and not libjpeg_accepts(b"not an image at all")


# On CUDA the entropy check always runs (nvJPEG returns pixels for broken data); on CPU both ways:
# torchvision's decoder rejects the file itself, or the check keeps it from the decoder.
@pytest.mark.parametrize(("device", "check"), [("cpu", False), ("cpu", True),
                                               pytest.param("cuda", True, marks=pytest.mark.gpu)])
def test_tensor_path_rows_match_cpu_path(
    files: list[Path], store: WeightsStore, device: str, check: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if check:
        monkeypatch.setattr(decode_gpu, "ENTROPY_CHECK_DEVICES", frozenset({device}))
    scorers = _scorers(device)
    uris = [str(p) for p in files]
    cpu = score_members(uris, [None] * len(uris), scorers, "s", batch_size=4, window=4, gpu_decode=False)
    sent: list[int] = []
    real = decode_gpu.decode_jpegs
    monkeypatch.setattr(decode_gpu, "decode_jpegs", lambda datas, dev: (sent.append(len(datas)), real(datas, dev))[1])
    fast = score_members(uris, [None] * len(uris), scorers, "s", batch_size=4, window=4, gpu_decode=True)
    # the path really ran, on the files it may take
    assert sum(sent) == sum(EXPECTED_TAKEN.values()) - (len(BROKEN_ENTROPY) if check else 0)
    for col in META:
        assert fast[col].to_pylist() == cpu[col].to_pylist(), col
    for s in scorers:
        name = s.info.name
        a, b = np.array(cpu[name].to_pylist(), float), np.array(fast[name].to_pylist(), float)
        assert np.array_equal(np.isnan(a), np.isnan(b)), name
        ok = ~np.isnan(a)
        scale = np.abs(a[ok]).max()
        rel = np.abs(a[ok] - b[ok]).max() / scale
        print(f"{device} {name}: max |tensor - cpu path| / max |score| = {rel:.1e}")
        assert rel <= SCORE_TOL[device], name


@pytest.mark.parametrize("device", DEVICES)
def test_score_tensors_is_score_on_the_same_pixels(store: WeightsStore, device: str) -> None:
    from jpegkit import texture

    pixels = [texture(96, 128, 0), texture(120, 90, 1)[:, :, 0]]  # one RGB, one gray
    tensors = [torch.from_numpy(p).permute(2, 0, 1) if p.ndim == 3 else torch.from_numpy(p)[None] for p in pixels]
    for s in _scorers(device):
        ref = s.score([convert(p, s.info.colour) for p in pixels])
        got = s.score_tensors(tensors)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())
    with pytest.raises(ValueError, match="uint8"):
        s.score_tensors([tensors[0].float()])


def test_path_selection(store: WeightsStore, caplog: pytest.LogCaptureFixture) -> None:
    kang = create_scorer("kang", "cpu")
    assert TensorPath.for_shard("auto", [kang]) is None  # auto: CUDA only
    assert TensorPath.for_shard(False, [kang]) is None
    assert TensorPath.for_shard(True, [kang]) is not None
    with caplog.at_level(logging.WARNING, logger="iqaflow.tasks.score.gpu"):
        assert TensorPath.for_shard(True, [kang, create_scorer("sharpness", "cpu")]) is None
    assert "sharpness is not a deep NR scorer" in caplog.text


def test_config_gpu_decode() -> None:
    assert build_config({"source": "x", "models": ["kang"]}).gpu_decode == "auto"
    assert build_config({"source": "x", "models": ["kang"], "gpu_decode": "true"}).gpu_decode is True
    assert build_config({"source": "x", "models": ["kang"], "gpu_decode": False}).gpu_decode is False
    with pytest.raises(ConfigError, match="gpu_decode"):
        build_config({"source": "x", "models": ["kang"], "gpu_decode": "sometimes"})
