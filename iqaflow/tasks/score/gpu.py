"""The shard's tensor path: JPEG bytes -> uint8 tensors on the scorers' device -> deep NR scores.

Why: on a GPU worker, Pillow decode plus the numpy -> tensor copy took 3-15x the forward pass
(bench/gpu.py: the shard loop ran at 6-29% of forward-only speed on an H100). Here a batch's
plain JPEGs are decoded in one ``torchvision.io.decode_jpeg`` call on the scorers' device (nvJPEG,
batched, on CUDA; libjpeg-turbo on CPU, where it exists so CI runs the same code) and handed to
``TorchScorer.score_tensors`` without leaving the device.

It applies only when every scorer of the shard is a deep NR scorer that uses the base class's
preprocessing; other shards, and within a shard every file ``jpeg_header`` does not accept or
the tensor decoder rejects, go through ``decode.decode`` as before, so error rows and codes do not
change. nvJPEG does not report broken entropy-coded data (it returns pixels; seen on an H200), so
on CUDA each file is first Huffman-decoded by libjpeg at 1/8 scale (``libjpeg_accepts``, in the
decode pool's threads): what libjpeg rejects goes to the CPU path, which reports it as it always
did. Scores differ from the CPU path only by decoder rounding (nvJPEG's IDCT and chroma
upsampling are not libjpeg's) and by float summation order; see tests/test_tensor_path.py.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np

from iqaflow.models.base import Scorer
from iqaflow.models.deep.torch_scorer import TorchScorer
from iqaflow.models.fingerprints import fingerprints
from iqaflow.tasks.decode import FULL_DECODE_CEILING, Decoded, open_image, sniff_medical
from iqaflow.tasks.decode.jpeg_header import JpegHeader, jpeg_header
from iqaflow.tasks.score.isolate import score_isolated

if TYPE_CHECKING:
    import torch

    from iqaflow.tasks.score.domain import DomainSettings
    from iqaflow.tasks.score.row import Row

log = logging.getLogger(__name__)

GpuDecode = bool | Literal["auto"]
# torchvision 0.29 deprecated its image codecs in favour of TorchCodec; they are what this
# pinned torchvision offers, so the notice would only repeat on every batch.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)
# Device types whose JPEG decoder returns pixels for broken entropy data: nvJPEG. The CPU decoder
# (libjpeg-turbo) rejects such files itself.
ENTROPY_CHECK_DEVICES = frozenset({"cuda"})
_NO_PIXELS = np.empty((0, 0), dtype=np.uint8)  # tensor rows keep their pixels on the device only


def unsupported(scorers: Sequence[Scorer], domain: DomainSettings | None = None) -> str | None:
    """Why the tensor path cannot score this shard, or None when it can."""
    if not scorers:
        return "no scorers"
    for s in scorers:
        if not isinstance(s, TorchScorer) or s.info.kind != "nr":
            return f"{s.info.name} is not a deep NR scorer"
        cls = type(s)
        if cls.score is not TorchScorer.score or cls._tensor is not TorchScorer._tensor:
            return f"{s.info.name} has its own preprocessing"
    if len({s.device for s in scorers}) != 1:
        return "the scorers are on different devices"
    if domain is not None and (domain.align != "none" or domain.heatmap_below is not None):
        return "registration and heatmaps need pixels on the host"
    return None


def _device_type(device: str) -> str:
    return device.split(":", 1)[0]


def libjpeg_accepts(data: bytes) -> bool:
    """Whether libjpeg (Pillow's) decodes this JPEG without an error, at 1/8 scale.

    At 1/8 scale libjpeg still Huffman-decodes every block, which is where broken entropy data
    shows, but skips most of the inverse DCT: 0.6 ms for a 512x512 file against 1.4 ms in full.
    Opened as the CPU path opens files, whose verdict this stands in for.
    """
    try:
        with open_image(data) as im:
            im.draft(im.mode, (max(1, im.width // 8), max(1, im.height // 8)))
            im.load()
    except Exception:
        return False
    return True


Mapper = Callable[[Callable[[bytes], bool], Iterable[bytes]], Iterator[bool]]


def decode_jpegs(datas: Sequence[bytes], device: str) -> list[torch.Tensor | None]:
    """uint8 ``(3, H, W)`` RGB per file on ``device``; None where the decoder rejects the file.

    On CUDA one batched nvJPEG call, then, if it raised, one call per file so a bad file costs only
    itself. On CPU torchvision loops anyway, so per file from the start.
    """
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    inputs = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
    if _device_type(device) == "cuda":
        # torchvision's CUDA decoder writes on a private stream that does not wait for the caller's,
        # so it can be handed (and overwrite) blocks that queued kernels still read (pytorch/vision#9606).
        torch.cuda.current_stream(device).synchronize()
        try:
            return list(decode_jpeg(inputs, mode=ImageReadMode.RGB, device=device))
        except Exception as exc:
            log.debug("batched JPEG decode failed (%s); decoding file by file", exc)
    out: list[torch.Tensor | None] = []
    for t in inputs:
        try:
            out.append(decode_jpeg(t, mode=ImageReadMode.RGB, device=device))
        except Exception:
            out.append(None)
    return out


class TensorPath:
    """Decode and score the rows of a batch that the tensor path can take, on the scorers' device."""

    def __init__(
        self, scorers: Sequence[TorchScorer], max_pixels: int | None = None, mapper: Mapper = map
    ) -> None:
        self.scorers = list(scorers)
        self.device = scorers[0].device
        self.check_entropy = _device_type(self.device) in ENTROPY_CHECK_DEVICES
        self.mapper = mapper  # e.g. a thread pool's map: Pillow releases the GIL while decoding
        # Larger files are the CPU path's: it downscales them to max_pixels (in the DCT domain), or,
        # with max_pixels None, reports those over FULL_DECODE_CEILING as TOO_LARGE.
        self.max_pixels = max_pixels if max_pixels is not None else FULL_DECODE_CEILING

    @classmethod
    def for_shard(
        cls, setting: GpuDecode | str, scorers: Sequence[Scorer], domain: DomainSettings | None = None,
        max_pixels: int | None = None, mapper: Mapper = map,
    ) -> TensorPath | None:
        """The tensor path for these scorers: ``auto`` on CUDA only, ``True`` on any device, ``False`` never."""
        if setting is False or setting in ("false", "off"):
            return None
        reason = unsupported(scorers, domain)
        if reason is None and setting == "auto" and _device_type(scorers[0].device) != "cuda":
            return None
        if reason is not None:
            level = logging.WARNING if setting is True else logging.DEBUG
            log.log(level, "tensor decode path off for this shard: %s; decoding on the CPU", reason)
            return None
        return cls([s for s in scorers if isinstance(s, TorchScorer)], max_pixels, mapper=mapper)

    def take(self, rows: list[Row]) -> list[Row]:
        """Decode and score every row this path accepts; returns the others, in order, for the CPU path."""
        picked: list[tuple[Row, JpegHeader]] = []
        for r in rows:
            data = r.fetched.data
            if r.fetched.error is None and data and sniff_medical(data) is None:
                header = jpeg_header(data, self.max_pixels)
                if header is not None:
                    picked.append((r, header))
        t0 = time.perf_counter()
        if picked and self.check_entropy:
            ok = list(self.mapper(libjpeg_accepts, [r.fetched.data or b"" for r, _ in picked]))
            picked = [p for p, good in zip(picked, ok, strict=True) if good]
        if not picked:
            return rows
        tensors = decode_jpegs([r.fetched.data or b"" for r, _ in picked], self.device)
        done: list[tuple[Row, torch.Tensor]] = []
        for (r, h), t in zip(picked, tensors, strict=True):
            if t is None or tuple(t.shape[-2:]) != (h.height, h.width):
                continue  # the CPU path decodes it and reports what is wrong with it
            r.decoded = Decoded(_NO_PIXELS, h.width, h.height, "JPEG", h.mode, 8)
            t = t[:1] if h.components == 1 else t  # gray stays gray, as Pillow's "L"
            # nvJPEG's IDCT may differ from libjpeg's by a level here and there: pixel_hash can then differ
            # from a CPU run's for the same file (perceptual hashes do not move).
            r.fingerprint = fingerprints(t.permute(1, 2, 0).cpu().numpy())
            done.append((r, t))
        decode_ms = (time.perf_counter() - t0) * 1e3 / max(1, len(done))
        for r, _ in done:
            r.decode_ms = decode_ms
        self._score(done)
        taken = {id(r) for r, _ in done}
        return [r for r in rows if id(r) not in taken]

    def _score(self, items: list[tuple[Row, torch.Tensor]]) -> None:
        if not items:
            return
        t0 = time.perf_counter()
        for scorer in self.scorers:
            _apply(scorer, items)
        per_image = (time.perf_counter() - t0) * 1e3 / len(items)
        for r, _ in items:
            r.score_ms = per_image


def _apply(scorer: TorchScorer, items: list[tuple[Row, torch.Tensor]]) -> None:
    score_isolated(scorer.info.name, scorer.info.outputs, scorer.score_tensors, items)
