"""The registered deep scorers: metadata and preprocessing as data, architectures in ``nets/``.

Weights are never bundled or downloaded here: each scorer names one file in the weights store
(``iqaflow weights add`` records its sha256). ``iqaflow.models.nets.convert`` maps the published
checkpoints (lpips, DISTS, DBCNN, HyperIQA) onto these networks. Architectures import lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from iqaflow.models.base import ScorerInfo, WeightSpec
from iqaflow.models.deep import TorchScorer
from iqaflow.models.registry import register

if TYPE_CHECKING:
    from torch import nn

_FR_NATIVE = "Computed at the pair's own size (downscaled only above {cap}px on the longer side)."


class _Lpips(TorchScorer):
    backbone = "alex"
    # Native size as the reference code; the cap bounds memory for large scans.
    max_side = 1024

    @classmethod
    def build(cls) -> nn.Module:
        from iqaflow.models.nets.lpips import LPIPS

        return LPIPS(cls.backbone)  # type: ignore[arg-type]


@register
class LpipsAlex(_Lpips):
    info = ScorerInfo(
        name="lpips_alex",
        kind="fr",
        higher_is_better=False,
        score_range=(0.0, None),
        description="LPIPS v0.1, AlexNet (Zhang et al. 2018): learned perceptual distance to the reference. "
        + _FR_NATIVE.format(cap=1024),
        size_policy="native",
        batchable=True,
        weights=(WeightSpec("lpips_alex.pt"),),
    )


@register
class LpipsVgg(_Lpips):
    backbone = "vgg"
    info = ScorerInfo(
        name="lpips_vgg",
        kind="fr",
        higher_is_better=False,
        score_range=(0.0, None),
        description="LPIPS v0.1, VGG16 (Zhang et al. 2018): learned perceptual distance to the reference. "
        + _FR_NATIVE.format(cap=1024),
        size_policy="native",
        batchable=True,
        weights=(WeightSpec("lpips_vgg.pt"),),
    )


@register
class Dists(TorchScorer):
    info = ScorerInfo(
        name="dists",
        kind="fr",
        higher_is_better=False,
        score_range=(0.0, None),
        description="DISTS (Ding et al. 2020): structure + texture distance on L2-pooled VGG16 features; "
        "pairs are downscaled to a 256px shorter side as in the reference code.",
        size_policy="native",
        batchable=True,
        weights=(WeightSpec("dists.pt"),),
    )
    short_side = 256

    @classmethod
    def build(cls) -> nn.Module:
        from iqaflow.models.nets.dists import DISTS

        return DISTS()


@register
class Kang(TorchScorer):
    info = ScorerInfo(
        name="kang",
        kind="nr",
        higher_is_better=True,
        score_range=(None, None),
        description="Kang et al. 2014 CNN on 32x32 locally normalised gray patches (up to 256 on an even "
        "grid), mean over patches; scale of the training set's scores.",
        colour="gray",
        size_policy="patches",
        batchable=True,
        weights=(WeightSpec("kang.pt"),),
    )
    patch_size = 32
    max_patches = 256

    @classmethod
    def build(cls) -> nn.Module:
        from iqaflow.models.nets.kang import KangCNN

        return KangCNN()


@register
class Dbcnn(TorchScorer):
    info = ScorerInfo(
        name="dbcnn",
        kind="nr",
        higher_is_better=True,
        score_range=(None, None),
        description="DBCNN (Zhang et al. 2020): bilinear pooling of a synthetic-distortion CNN and VGG16; "
        "images resized to 384x384 so batches stack.",
        size_policy="resize",
        batchable=True,
        weights=(WeightSpec("dbcnn.pt"),),
    )
    input_size = (384, 384)

    @classmethod
    def build(cls) -> nn.Module:
        from iqaflow.models.nets.dbcnn import DBCNN

        return DBCNN()


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
        from iqaflow.models.nets.hyperiqa import HyperIQA

        return HyperIQA(cls.backbone)  # type: ignore[arg-type]
