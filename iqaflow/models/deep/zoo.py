"""The registered deep scorers: metadata and preprocessing as data, architectures in ``nets/``.

Nothing downloads here. LPIPS, DISTS and DBCNN are assembled at ``setup`` from published parts: the
small official heads ship inside the package, torchvision's ImageNet backbone is a file the user adds
(``iqaflow weights add``; sha256 pinned), and ``iqaflow.models.deep.nets.convert`` maps them onto these
networks. The other scorers name one file in the weights store (``iqaflow weights add`` records its
sha256). Architectures import lazily.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

from iqaflow.errors import WeightsError
from iqaflow.models.base import ScorerInfo, WeightSpec
from iqaflow.models.deep.torch_scorer import TorchScorer
from iqaflow.models.registry import register

if TYPE_CHECKING:
    import torch
    from torch import nn

    from iqaflow.models.weights import WeightsStore

# The published Kang CNN weights' own file name (lidq92/CNNIQA), so `iqaflow weights add` keeps it.
KANG_WEIGHTS = "CNNIQA-LIVE"
PATCH = 32

_FR_NATIVE = "Computed at the pair's own size (downscaled only above {cap}px on the longer side)."

# torchvision's ImageNet checkpoints, pinned by the full sha256 of the files it publishes at
# download.pytorch.org/models/ (each name carries that hash's first hex digits, which torch.hub checks;
# the full hashes agree with them and with independent records of those downloads). Not shipped: the
# user adds them, and `iqaflow weights add` refuses other bytes under these names.
ALEXNET = WeightSpec("alexnet-owt-7be5be79.pth", "7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02")
VGG16 = WeightSpec("vgg16-397923af.pth", "397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0")
# The official heads, shipped unchanged in iqaflow/weights (licences and sources in its NOTICE).
LPIPS_HEADS = {
    "alex": WeightSpec("lpips_alex_v0.1.pth", "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0"),
    "vgg": WeightSpec("lpips_vgg_v0.1.pth", "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868"),
}
DISTS_ALPHA_BETA = WeightSpec("dists_alpha_beta.pt", "f5e65c96230b7f6ca995691647d482237e4cab8a50c5c4a5784f219ef0748218")
DBCNN_SCNN = WeightSpec("dbcnn_scnn.pt", "7ea73d75539cefcf4953800a896e024ea1a3216de2392f242810b113fd940a42")
# DBCNN's linear head is fitted to human scores and not published: checked against the store's manifest.
DBCNN_HEAD = WeightSpec("dbcnn_head.pt")

_ADD_TORCHVISION = "add torchvision's ImageNet {} with iqaflow weights add"
_SHIPPED = "shipped with iqaflow: reinstall it"
WEIGHTS_HELP: dict[str, str] = {
    ALEXNET.filename: _ADD_TORCHVISION.format("AlexNet"),
    VGG16.filename: _ADD_TORCHVISION.format("VGG16"),
    DBCNN_HEAD.filename: "DBCNN's head ({fc.weight, fc.bias}, fitted to human scores) is not published: fit "
    "one and add it, or add a whole fine-tuned DBCNN (convert.dbcnn_state_dict) as dbcnn.pt",
    **{spec.filename: _SHIPPED for spec in (*LPIPS_HEADS.values(), DISTS_ALPHA_BETA, DBCNN_SCNN)},
}


class _Composed(TorchScorer):
    """A network assembled at ``setup`` from its published parts (``info.weights``, in the order ``compose``
    takes them). A whole network in the store under ``whole_file`` (converted or fine-tuned; its hash from
    the store's manifest) takes precedence: what the contract tests' seeded weights use, as random parts
    cannot pass the backbone's pin."""

    whole_file: ClassVar[str]
    # How to supply each part; `iqaflow models` and setup's errors say it next to a missing file.
    weights_help: ClassVar[dict[str, str]] = WEIGHTS_HELP

    @classmethod
    def compose(cls, *parts: dict[str, Any]) -> dict[str, Any]:
        """The network's state dict from the parts' state dicts (``iqaflow.models.deep.nets.convert``)."""
        raise NotImplementedError(f"{cls.__name__} must implement compose")

    @classmethod
    def make_test_weights(cls, store: WeightsStore, seed: int = 0) -> None:
        import torch

        torch.manual_seed(seed)
        store.put_state_dict(cls.whole_file, cls.build().state_dict())

    def setup(self, device: str = "cpu") -> None:
        from iqaflow.models.weights import get_store

        store = get_store()
        whole = WeightSpec(self.whole_file)
        if replace(store, allow_download=False).status(whole) == "missing":  # an optional file: never fetched
            self.load_state_dict(self.compose(*(self._part(store, spec) for spec in self.info.weights)), device)
            return
        try:
            self.load_state_dict(store.load_state_dict(whole), device)
        except WeightsError as exc:
            raise WeightsError(
                f"{self.whole_file!r} in the weights store is not a whole {self.info.name} network: {exc}. Fix: "
                "convert it with iqaflow.models.deep.nets.convert, or remove it to use the published parts"
            ) from exc

    def _part(self, store: WeightsStore, spec: WeightSpec) -> dict[str, Any]:
        try:
            return store.load_state_dict(spec)
        except WeightsError as exc:
            if spec.filename not in self.weights_help:
                raise
            hint = self.weights_help[spec.filename]
            raise WeightsError(f"{self.info.name} needs {spec.filename}: {hint}. {exc}") from exc


class _Lpips(_Composed):
    backbone = "alex"
    # Native size as the reference code; the cap bounds memory for large scans.
    max_side = 1024

    @classmethod
    def build(cls) -> nn.Module:
        from iqaflow.models.deep.nets.lpips import LPIPS

        return LPIPS(cls.backbone)  # type: ignore[arg-type]

    @classmethod
    def compose(cls, *parts: dict[str, Any]) -> dict[str, Any]:
        from iqaflow.models.deep.nets.convert import lpips_state_dict

        trunk, heads = parts
        return lpips_state_dict(trunk, heads, cls.backbone)  # type: ignore[arg-type]


@register
class LpipsAlex(_Lpips):
    info = ScorerInfo(
        name="lpips_alex",
        kind="fr",
        higher_is_better=False,
        score_range=(0.0, None),
        description="LPIPS v0.1, AlexNet (Zhang et al. 2018): learned perceptual distance to the reference. "
        + _FR_NATIVE.format(cap=1024)
        + " The official v0.1 heads ship with iqaflow; needs torchvision's ImageNet AlexNet "
        "(alexnet-owt-7be5be79.pth, `iqaflow weights add`).",
        size_policy="native",
        batchable=True,
        weights=(ALEXNET, LPIPS_HEADS["alex"]),
    )
    whole_file = "lpips_alex.pt"


@register
class LpipsVgg(_Lpips):
    backbone = "vgg"
    info = ScorerInfo(
        name="lpips_vgg",
        kind="fr",
        higher_is_better=False,
        score_range=(0.0, None),
        description="LPIPS v0.1, VGG16 (Zhang et al. 2018): learned perceptual distance to the reference. "
        + _FR_NATIVE.format(cap=1024)
        + " The official v0.1 heads ship with iqaflow; needs torchvision's ImageNet VGG16 "
        "(vgg16-397923af.pth, `iqaflow weights add`).",
        size_policy="native",
        batchable=True,
        weights=(VGG16, LPIPS_HEADS["vgg"]),
    )
    whole_file = "lpips_vgg.pt"


@register
class Dists(_Composed):
    info = ScorerInfo(
        name="dists",
        kind="fr",
        higher_is_better=False,
        score_range=(0.0, None),
        description="DISTS (Ding et al. 2020): structure + texture distance on L2-pooled VGG16 features; "
        "pairs are downscaled to a 256px shorter side as in the reference code. The official alpha/beta "
        "ship with iqaflow; needs torchvision's ImageNet VGG16 (vgg16-397923af.pth, `iqaflow weights add`).",
        size_policy="native",
        batchable=True,
        weights=(VGG16, DISTS_ALPHA_BETA),
    )
    whole_file = "dists.pt"
    short_side = 256

    @classmethod
    def build(cls) -> nn.Module:
        from iqaflow.models.deep.nets.dists import DISTS

        return DISTS()

    @classmethod
    def compose(cls, *parts: dict[str, Any]) -> dict[str, Any]:
        from iqaflow.models.deep.nets.convert import dists_state_dict

        trunk, alpha_beta = parts
        return dists_state_dict(trunk, alpha_beta)


@register
class Kang(TorchScorer):
    info = ScorerInfo(
        name="kang",
        kind="nr",
        higher_is_better=False,
        score_range=(None, None),
        description="Kang et al. 2014 CNN on 32x32 locally normalised gray patches, mean over the "
        "non-overlapping tiles; with the published CNNIQA-LIVE weights (lidq92/CNNIQA, not shipped: add the "
        "file with `iqaflow weights add`) the score is LIVE DMOS, about 0 pristine to 100 worst, and equals "
        "the reference code's. Images of more than 2048 tiles are read on an even subset of them.",
        colour="rgb",
        size_policy="patches",
        batchable=True,
        weights=(WeightSpec(KANG_WEIGHTS),),
    )
    weights_help: ClassVar[dict[str, str]] = {
        KANG_WEIGHTS: "add the CNNIQA-LIVE file published with lidq92/CNNIQA with iqaflow weights add",
    }
    patch_size = PATCH
    # 2048 tiles cover a 2-megapixel image in full (the reference reads every tile); beyond that an
    # even subset of the same tiles bounds the cost of archive-sized scans.
    max_patches = 2048

    @classmethod
    def build(cls) -> nn.Module:
        from iqaflow.models.deep.nets.kang import KangCNN

        return KangCNN()

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """RGB ``(N, 3, H, W)`` -> gray tiles as the reference: PIL luma, then top-left anchored tiles."""
        from iqaflow.models.deep.nets.kang import pil_luma, tile_starts
        from iqaflow.models.deep.torch_scorer import crop_patches, resize

        gray = pil_luma(x)
        h, w = gray.shape[-2:]
        if min(h, w) < self.patch_size:  # too small for one tile: upscale, as grid_patches does
            s = self.patch_size / min(h, w)
            gray = resize(gray, (max(self.patch_size, math.ceil(h * s)), max(self.patch_size, math.ceil(w * s))))
            h, w = gray.shape[-2:]
        rows, cols = tile_starts(h, self.patch_size), tile_starts(w, self.patch_size)
        if len(rows) * len(cols) > self.max_patches:
            f = math.sqrt(self.max_patches / (len(rows) * len(cols)))
            rows, cols = _even_subset(rows, max(1, int(len(rows) * f))), _even_subset(cols, max(1, int(len(cols) * f)))
        return crop_patches(gray, self.patch_size, rows, cols)


def _even_subset(values: list[int], count: int) -> list[int]:
    """``count`` of ``values``, evenly spread and including both ends."""
    if count >= len(values):
        return values
    if count == 1:
        return [values[len(values) // 2]]
    return [values[round(i * (len(values) - 1) / (count - 1))] for i in range(count)]


@register
class Dbcnn(_Composed):
    info = ScorerInfo(
        name="dbcnn",
        kind="nr",
        higher_is_better=True,
        score_range=(None, None),
        description="DBCNN (Zhang et al. 2020): bilinear pooling of a synthetic-distortion CNN and VGG16; "
        "images resized to 384x384 so batches stack. The official pre-trained S-CNN ships with iqaflow; also "
        "needs torchvision's ImageNet VGG16 (vgg16-397923af.pth) and a head fitted to human scores "
        "(dbcnn_head.pt, not published), or instead a whole fine-tuned DBCNN as dbcnn.pt.",
        size_policy="resize",
        batchable=True,
        weights=(VGG16, DBCNN_SCNN, DBCNN_HEAD),
    )
    whole_file = "dbcnn.pt"
    input_size = (384, 384)

    @classmethod
    def build(cls) -> nn.Module:
        from iqaflow.models.deep.nets.dbcnn import DBCNN

        return DBCNN()

    @classmethod
    def compose(cls, *parts: dict[str, Any]) -> dict[str, Any]:
        from iqaflow.models.deep.nets.convert import dbcnn_parts_state_dict

        trunk, scnn, head = parts
        return dbcnn_parts_state_dict(trunk, scnn, head)


@register
class HyperIqa(TorchScorer):
    info = ScorerInfo(
        name="hyperiqa",
        kind="nr",
        higher_is_better=True,
        score_range=(None, None),
        description="HyperIQA (Su et al. 2020), ResNet-50: content-adaptive hyper network; image resized to "
        "512x384 (HxW, as the reference code), mean over a 3x3 grid of 224px patches.",
        size_policy="patches",
        batchable=True,
        weights=(WeightSpec("hyperiqa.pt"),),
    )
    backbone = "resnet50"
    input_size = (512, 384)
    patch_size = 224
    patch_grid = (3, 3)

    @classmethod
    def build(cls) -> nn.Module:
        from iqaflow.models.deep.nets.hyperiqa import HyperIQA

        return HyperIQA(cls.backbone)  # type: ignore[arg-type]
