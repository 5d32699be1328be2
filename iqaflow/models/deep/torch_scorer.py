"""The shared base of the deep scorers: numpy images in, size policy, batched inference, floats out.

A ``TorchScorer`` subclass names its network (``build``) and its preprocessing as class data;
this module turns a list of differently sized images into fixed-shape batches, runs them under
``torch.inference_mode`` (fp16 autocast on CUDA, fp32 on CPU), and averages patch scores back
to one row per image. Weights come from the weights store in ``setup``. torch is imported
lazily so that listing scorers stays cheap.

Size policies:
  * ``resize``: every image is resized (bilinear, antialiased) to ``input_size`` (H, W).
  * ``patches``: optionally resized to ``input_size`` first, then ``patch_size`` crops on an evenly
    spaced grid (``patch_grid`` rows x cols, or tiling the image when None, at most ``max_patches``);
    the image score is the mean of its patch scores. Deterministic: the same image, the same crops.
  * ``native``: the image as it is, downscaled only when its shorter side exceeds ``short_side`` or
    its longer side exceeds ``max_side``; images of equal shape are batched together.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from iqaflow.errors import WeightsError
from iqaflow.models.base import Image, Scorer

if TYPE_CHECKING:
    import torch
    from torch import nn

    from iqaflow.models.weights import WeightsStore


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(N, C, H, W)`` with antialiasing (so downscaling does not alias)."""
    import torch.nn.functional as F

    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def fit_native(x: torch.Tensor, short_side: int | None, max_side: int | None) -> torch.Tensor:
    """Downscale (keeping the aspect ratio) so the sides respect the limits; never upscale."""
    h, w = x.shape[-2:]
    scale = 1.0
    if short_side is not None:
        scale = min(scale, short_side / min(h, w))
    if max_side is not None:
        scale = min(scale, max_side / max(h, w))
    if scale >= 1.0:
        return x
    return resize(x, (max(1, round(h * scale)), max(1, round(w * scale))))


def grid_starts(length: int, patch: int, count: int) -> list[int]:
    """``count`` evenly spaced crop offsets covering ``[0, length)``; centred when ``count`` is 1."""
    if count <= 1:
        return [(length - patch) // 2]
    return [round(i * (length - patch) / (count - 1)) for i in range(count)]


def grid_patches(x: torch.Tensor, patch: int, grid: tuple[int, int] | None, max_patches: int) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N * P, C, patch, patch)``: P crops per image on an even grid, image by image.

    Small images are upscaled first. One gather for the whole batch: slicing 256 patches one by one
    cost more Python time per image than a small network's forward pass on a GPU.
    """
    h, w = x.shape[-2:]
    if min(h, w) < patch:
        s = patch / min(h, w)
        x = resize(x, (max(patch, math.ceil(h * s)), max(patch, math.ceil(w * s))))
        h, w = x.shape[-2:]
    if grid is None:
        rows, cols = max(1, h // patch), max(1, w // patch)
        if rows * cols > max_patches:
            f = math.sqrt(max_patches / (rows * cols))
            rows, cols = max(1, int(rows * f)), max(1, int(cols * f))
    else:
        rows, cols = grid
    return crop_patches(x, patch, grid_starts(h, patch, rows), grid_starts(w, patch, cols))


def crop_patches(x: torch.Tensor, patch: int, row_starts: Sequence[int], col_starts: Sequence[int]) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N * R * K, C, patch, patch)``: the crops at every (row, col) start, image by image."""
    ri, ci = _patch_index(tuple(row_starts), tuple(col_starts), patch, str(x.device))
    crops = x[:, :, ri[:, None, :, None], ci[None, :, None, :]]  # (N, C, rows, cols, patch, patch)
    return crops.permute(0, 2, 3, 1, 4, 5).reshape(-1, x.shape[1], patch, patch)


@functools.lru_cache(maxsize=64)
def _patch_index(
    rs: tuple[int, ...], cs: tuple[int, ...], patch: int, device: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column pixel indices ``(rows, patch)``, ``(cols, patch)`` of a grid, kept on the device."""
    import torch

    with torch.inference_mode(False):  # cached: plain tensors, usable where autograd records too
        step = torch.arange(patch)
        return ((torch.tensor(rs)[:, None] + step).to(device), (torch.tensor(cs)[:, None] + step).to(device))


class TorchScorer(Scorer):
    """Base of the deep scorers. Subclasses set ``info`` (one ``WeightSpec``) and implement ``build``."""

    # Preprocessing, read through ``self`` so a test (or a caller) may override it per instance.
    input_size: tuple[int, int] | None = None
    patch_size: int = 224
    patch_grid: tuple[int, int] | None = None
    max_patches: int = 256
    short_side: int | None = None
    max_side: int | None = None
    # Upper bound on pixels per forward pass (bounds activation memory; 32 images of 512x512).
    max_batch_pixels: int = 1 << 23
    # Images converted and cut into inputs together by ``score_tensors``: enough to spread the kernel
    # launches and Python of preprocessing, few enough that a CPU keeps the work in its caches.
    prepare_chunk: int = 8
    # bfloat16 autocast on CPU: only where the CPU has it natively (``device.native_bf16``) and the
    # scorer's accuracy was measured with it; False runs fp32.
    cpu_bf16: bool = False

    def __init__(self) -> None:
        super().__init__()
        self.net: nn.Module | None = None

    @classmethod
    def build(cls) -> nn.Module:
        """A freshly initialised network (no weights loaded)."""
        raise NotImplementedError(f"{cls.__name__} must implement build")

    @classmethod
    def make_test_weights(cls, store: WeightsStore, seed: int = 0) -> None:
        import torch

        torch.manual_seed(seed)
        store.put_state_dict(cls.info.weights[0].filename, cls.build().state_dict())

    def setup(self, device: str = "cpu") -> None:
        from iqaflow.models.weights import get_store

        self.load_state_dict(get_store().load_state_dict(self.info.weights[0]), device)

    def load_state_dict(self, state: dict[str, Any], device: str = "cpu") -> None:
        """Build the network, load ``state`` strictly and move it to ``device`` for inference."""
        net = self.build()
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise WeightsError(
                f"weights file {self.info.weights[0].filename!r} does not fit scorer {self.info.name!r}: "
                f"expected the state dict of {type(net).__name__}, got {exc}. "
                "Fix: convert published checkpoints with iqaflow.models.deep.nets.convert"
            ) from exc
        self.net = net.to(device).eval().requires_grad_(False)
        self.device = device

    # -- preprocessing --------------------------------------------------------------------------------
    def _tensor(self, image: Image) -> torch.Tensor:
        import torch

        rgb = self.info.colour == "rgb"
        if image.ndim != (3 if rgb else 2) or (rgb and image.shape[2] != 3):
            want = "(H, W, 3)" if rgb else "(H, W)"
            raise ValueError(
                f"{self.info.name} expects {self.info.colour} images of shape {want}, got {image.shape}. "
                "Fix: convert with iqaflow.models.colour.convert before scoring"
            )
        t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).to(self.device)
        return (t.permute(2, 0, 1) if rgb else t[None])[None]

    def _unit_batch(self, images: torch.Tensor) -> torch.Tensor:
        """Decoded uint8 ``(N, C, H, W)`` (C 1 or 3, any device) -> ``(N, C', H, W)`` float32 in [0, 1].

        The same arithmetic as ``colour.convert`` (multiply by float32 1/255, gray replicated to RGB,
        RGB to gray with the weights OpenCV uses), so the tensor path feeds the network the numbers
        the numpy path would, to float rounding.
        """
        x = images.to(self.device, non_blocking=True).float() * (1 / 255)
        if self.info.colour == "gray":
            return x if x.shape[1] == 1 else x[:, 0:1] * 0.299 + x[:, 1:2] * 0.587 + x[:, 2:3] * 0.114
        return x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Images of one shape ``(N, C, H, W)`` -> the network's inputs ``(N * P, C, h, w)`` under
        ``info.size_policy``, image by image (P is 1 except for ``patches``)."""
        policy = self.info.size_policy
        if policy == "resize":
            if self.input_size is None:
                raise TypeError(f"{type(self).__name__}: size_policy 'resize' needs input_size")
            return resize(x, self.input_size)
        if policy == "patches":
            if self.input_size is not None:
                x = resize(x, self.input_size)
            return grid_patches(x, self.patch_size, self.patch_grid, self.max_patches)
        return fit_native(x, self.short_side, self.max_side)

    # -- inference --------------------------------------------------------------------------------------
    def _forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        import torch

        device_type = torch.device(self.device).type
        cuda = device_type == "cuda"
        dtype = torch.float16 if cuda else torch.bfloat16
        with torch.autocast(device_type, dtype=dtype, enabled=cuda or self.cpu_bf16):
            return self.net(*inputs).float().reshape(-1)  # type: ignore[misc]

    def _run(self, items: list[tuple[torch.Tensor, ...]]) -> np.ndarray:
        """Forward every item's patches, batching equal shapes; the mean patch score per item, float64."""
        import torch

        out = np.empty(len(items), dtype=np.float64)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, item in enumerate(items):
            groups.setdefault(tuple(item[0].shape[1:]), []).append(i)
        for shape, idx in groups.items():
            per = max(1, self.max_batch_pixels // (shape[-1] * shape[-2]))
            pos = 0
            while pos < len(idx):
                take, count = [], 0
                while pos < len(idx) and (not take or count + items[idx[pos]][0].shape[0] <= per):
                    take.append(idx[pos])
                    count += items[idx[pos]][0].shape[0]
                    pos += 1
                parts = [torch.cat([items[i][k] for i in take]) for k in range(len(items[take[0]]))]
                scores = torch.cat([self._forward(*(p[s : s + per] for p in parts)) for s in range(0, count, per)])
                sizes = [items[i][0].shape[0] for i in take]
                for i, chunk in zip(take, torch.split(scores.double().cpu(), sizes), strict=True):
                    out[i] = float(chunk.mean())
        return out

    def _check_ready(self) -> None:
        if self.net is None:
            raise RuntimeError(f"scorer {self.info.name!r} has no weights loaded. Fix: call setup(device) first")

    def score(self, images: Sequence[Image]) -> np.ndarray:
        if self.info.kind != "nr":
            return super().score(images)
        self._check_ready()
        import torch

        with torch.inference_mode():
            items = [(self.prepare(self._tensor(img)),) for img in images]
            return self._run(items).reshape(-1, 1)

    def score_tensors(self, images: Sequence[torch.Tensor]) -> np.ndarray:
        """``score`` for decoded uint8 tensors (e.g. nvJPEG output already on the GPU).

        The same preprocessing, batching and AMP as ``score``, minus the host round trip: the
        shard's tensor path (iqaflow.tasks.score.gpu) decodes on the device and calls this.
        """
        if self.info.kind != "nr":
            raise TypeError(f"{self.info.name} is an FR scorer; score_tensors takes NR images only")
        self._check_ready()
        import torch

        for t in images:
            if t.dtype != torch.uint8 or t.ndim != 3 or t.shape[0] not in (1, 3):
                raise ValueError(
                    f"{self.info.name}: expected decoded uint8 tensors of shape (1|3, H, W), got {tuple(t.shape)} "
                    f"{t.dtype}. Fix: pass torchvision.io.decode_jpeg output, or call score with numpy images"
                )
        # Images of one shape are converted and cut into the network's inputs together: per-image
        # preprocessing is kernel launches and Python, which a small network's forward does not hide.
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, t in enumerate(images):
            groups.setdefault((*t.shape, t.device), []).append(i)
        items: list[tuple[torch.Tensor, ...]] = [()] * len(images)
        chunks = [idx[k : k + self.prepare_chunk] for idx in groups.values()
                  for k in range(0, len(idx), self.prepare_chunk)]
        with torch.inference_mode():
            for idx in chunks:
                prepared = self.prepare(self._unit_batch(torch.stack([images[i] for i in idx])))
                for i, part in zip(idx, torch.split(prepared, prepared.shape[0] // len(idx)), strict=True):
                    items[i] = (part,)
            return self._run(items).reshape(-1, 1)

    def score_pairs(self, images: Sequence[Image], references: Sequence[Image]) -> np.ndarray:
        if self.info.kind != "fr":
            return super().score_pairs(images, references)
        self._check_ready()
        if len(images) != len(references):
            raise ValueError(f"expected as many references as images, got {len(references)} and {len(images)}")
        for img, ref in zip(images, references, strict=True):
            if img.shape != ref.shape:
                raise ValueError(
                    f"{self.info.name}: image and reference must have the same shape, got {img.shape} and "
                    f"{ref.shape}. Fix: align or resize the pair before scoring (the FR path's alignment step)"
                )
        import torch

        with torch.inference_mode():
            items = [
                (self.prepare(self._tensor(i)), self.prepare(self._tensor(r)))
                for i, r in zip(images, references, strict=True)
            ]
            return self._run(items).reshape(-1, 1)
