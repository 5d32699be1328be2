"""``iqaflow_nr``: the default NR scorer. ImageNet MobileNet v1 features of several views -> RBF SVR -> MOS.

Two files, both shipped inside the package and pinned by sha256:

* ``mobilenet_v1_224.pt``: Google's int8 MobileNet v1 (Apache-2.0), converted from its TFLite file by
  ``iqaflow weights convert-tflite`` (``iqaflow.models.deep.nets.tflite_read``) and run in float;
* ``iqaflow_nr.pt``: the regressor, fitted by ``iqaflow train-default --config configs/default_nr.yaml``
  on BIQ2021's train split and the CLIVE subset (their notices are in ``iqaflow/weights/NOTICE``);
  ``iqaflow_nr_fast.pt`` the same on two views (``configs/default_nr_fast.yaml``).

The views (whole image + native-resolution crops, ``mobilenet_views``) are stacked along the channel axis
so that the generic ``TorchScorer`` batching sees one input per image; the network unstacks them.
On CPUs with native bfloat16 (AVX512-BF16, AMX) the backbone runs in bf16: 2.4x faster on one core,
features within 0.999 correlation of fp32, and what the heads were fitted on; the head always runs in fp32.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from iqaflow.models.base import ScorerInfo, WeightSpec
from iqaflow.models.deep.torch_scorer import TorchScorer
from iqaflow.models.registry import register
from iqaflow.models.weights import ShippedWeights, get_store

if TYPE_CHECKING:
    import torch

VIEW = 224  # side of every view (mobilenet_views.VIEW; torch is imported only when scoring)

BACKBONE_FILE = "mobilenet_v1_224.pt"
HEAD_FILE = "iqaflow_nr.pt"
FAST_HEAD_FILE = "iqaflow_nr_fast.pt"
# sha256 of the shipped files; `iqaflow weights convert-tflite` and `iqaflow train-default` print theirs.
BACKBONE_SHA256 = "89d4cffdadbe516cb5dc9206648e924d9f47b6ee56ea2629f5df9056c7623fc6"
FAST_HEAD_SHA256 = "2dcceb711005fd8938bdbe98ff173ddfcfea3b6b884033430d3340d6990bff6a"
HEAD_SHA256 = "c2140cdc5aaf23f54fa469ac06edd6fe5f67e3451ae836411ec290d25e84a6a2"


@register
class IqaflowNR(ShippedWeights, TorchScorer):
    info = ScorerInfo(
        name="iqaflow_nr",
        kind="nr",
        higher_is_better=True,
        score_range=(0.0, 100.0),
        description="Default NR quality on the human MOS scale (0 bad - 100 excellent): ImageNet MobileNet v1 "
        "features of the whole image and native-resolution crops -> RBF SVR fitted to BIQ2021's train split "
        "and the CLIVE subset. Shipped in the package; needs no download.",
        colour="rgb",
        size_policy="native",
        batchable=True,
        weights=(WeightSpec(BACKBONE_FILE, sha256=BACKBONE_SHA256), WeightSpec(HEAD_FILE, sha256=HEAD_SHA256)),
    )
    # Views (224x224) per forward pass on CUDA. On CPU one image's views at a time: 96 views at once ran at
    # 21 ms a view against 10 ms for 4-8 (one core, bf16: activations no longer fit the caches), and an
    # image alone in its forward pass scores the same whatever shares its batch (bf16 kernels differ by
    # batch shape in the last digits).
    cuda_views_per_batch = 768

    def __init__(self) -> None:
        super().__init__()
        self.views: Any = None  # mobilenet_views.ViewSet of the loaded head
        self._graph: dict[str, Any] | None = None
        self._bf16 = False

    def setup(self, device: str = "cpu") -> None:
        store = get_store()
        backbone, head = (store.load_state_dict(spec) for spec in self.info.weights)
        self.load(backbone, head, device)

    def load(self, graph: dict[str, Any], head: dict[str, Any], device: str = "cpu") -> None:
        """Build the network from a backbone graph state and a head state (tests pass their own)."""
        import torch

        from iqaflow.models.deep.nets.default_nr_net import DefaultNrNet
        from iqaflow.models.device import native_bf16

        net = DefaultNrNet(graph, head)
        self._graph = graph
        self.views = net.views
        self.net = net.to(device).eval().requires_grad_(False)
        self.device = device
        on_cuda = torch.device(device).type == "cuda"
        self._bf16 = not on_cuda and native_bf16()
        if self._bf16:
            net.backbone.to(torch.bfloat16)
        per = max(1, self.cuda_views_per_batch // self.views.count) if on_cuda else 1
        self.max_batch_pixels = per * VIEW * VIEW  # _run counts one input (the stacked views) per image

    @property
    def cpu_bf16(self) -> bool:  # type: ignore[override]
        return self._bf16

    @cpu_bf16.setter
    def cpu_bf16(self, on: bool) -> None:
        """bf16 on CPU casts the backbone's weights once, here: under autocast alone every call re-cast them
        (5 ms an image). Off rebuilds the fp32 backbone from the graph (a bf16 round trip would lose bits)."""
        if bool(on) == self._bf16:
            return
        self._bf16 = bool(on)
        if self.net is None or self._graph is None:
            return
        import torch

        from iqaflow.models.deep.nets.mobilenet_views import MobileNetViews

        backbone = MobileNetViews(self._graph).to(self.device).eval().requires_grad_(False)
        self.net.backbone = backbone.to(torch.bfloat16) if self._bf16 else backbone

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        from iqaflow.models.deep.nets.mobilenet_views import make_views

        views = make_views(x, self.views)
        return views.reshape(views.shape[0], -1, VIEW, VIEW)


@register
class IqaflowNRFast(IqaflowNR):
    """The same recipe on two views (the whole image and the centre crop): the view set that does >= 30
    images/s on one core at 512x512 (bench/default_nr.py), chosen by speed alone."""

    info = replace(
        IqaflowNR.info,
        name="iqaflow_nr_fast",
        description="iqaflow_nr on 2 views instead of 6 (whole image + centre crop): about three times as fast on "
        "CPU, slightly less accurate (README table). Same 0-100 MOS scale. Shipped; needs no download.",
        weights=(IqaflowNR.info.weights[0], WeightSpec(FAST_HEAD_FILE, sha256=FAST_HEAD_SHA256)),
    )


HEADS = {"iqaflow_nr": IqaflowNR, "iqaflow_nr_fast": IqaflowNRFast}
