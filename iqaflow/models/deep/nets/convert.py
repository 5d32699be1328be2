"""Map published checkpoints onto the deep scorers' state dicts (key renaming only, no maths).

Pure functions over state dicts: they neither download nor read files. The scorers call them at
``setup`` to assemble their networks from the published parts, unchanged bytes in the weights store:

* ``lpips_state_dict``: torchvision's ImageNet AlexNet/VGG16 (``alexnet-owt-7be5be79.pth`` /
  ``vgg16-397923af.pth``) + the lpips v0.1 linear heads (``alex.pth`` / ``vgg.pth``, shipped);
* ``dists_state_dict``: torchvision's VGG16 + DISTS's ``alpha``/``beta`` (shipped);
* ``dbcnn_parts_state_dict``: torchvision's VGG16 + DBCNN's pre-trained S-CNN (``scnn.pkl``,
  shipped) + a bilinear head ``{"fc.weight", "fc.bias"}``.

A whole checkpoint converts too: ``dbcnn_state_dict`` / ``hyperiqa_state_dict`` strip
DataParallel's ``module.`` prefix and drop what the scoring nets do not hold (a fine-tuned DBCNN
changes both branches, so it is stored whole as ``dbcnn.pt``). Every function checks the result's
keys and shapes against the target network, so a wrong file fails here, not at scoring time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

from iqaflow.errors import WeightsError
from iqaflow.models.deep.nets import dbcnn, dists, hyperiqa, lpips

State = dict[str, torch.Tensor]


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str = "module.") -> State:
    return {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state.items()}


def trunk_features(state: Mapping[str, torch.Tensor], last: int) -> State:
    """``features.N.*`` with N <= ``last`` from a torchvision trunk, a full torchvision model, a
    ``features`` Sequential's own state dict (``N.*``), or the lpips/DISTS slice layout
    (``net.sliceK.N.*`` / ``stageK.N.*``, which keep torchvision's indices)."""
    out: State = {}
    pattern = re.compile(r"^(?:module\.)?(?:features\.|net\.slice\d\.|stage\d\.)?(\d+)\.(weight|bias)$")
    for key, value in state.items():
        m = pattern.match(key)
        if m and int(m.group(1)) <= last:
            out[f"features.{m.group(1)}.{m.group(2)}"] = value
    return out


def checked(net: nn.Module, state: State) -> State:
    """``state`` if it loads into ``net`` strictly with matching shapes, else a ``WeightsError``."""
    want = net.state_dict()
    missing = sorted(set(want) - set(state))
    extra = sorted(set(state) - set(want))
    bad = sorted(k for k in set(want) & set(state) if tuple(want[k].shape) != tuple(state[k].shape))
    if missing or extra or bad:
        raise WeightsError(
            f"converted state dict does not fit {type(net).__name__}: missing {missing[:5]}, unexpected "
            f"{extra[:5]}, wrong shape {bad[:5]}. Fix: pass the checkpoint the function's docstring names"
        )
    return {k: (v.float() if v.is_floating_point() else v).detach().contiguous() for k, v in state.items()}


def lpips_state_dict(
    trunk: Mapping[str, torch.Tensor], heads: Mapping[str, torch.Tensor], backbone: lpips.Backbone
) -> State:
    """torchvision AlexNet/VGG16 weights + lpips heads (``linK.model.1.weight``) -> ``LPIPS`` state dict.

    ``heads`` may also be a whole ``lpips.LPIPS`` state dict; its ``net.*`` entries then serve as trunk.
    """
    state = trunk_features(trunk, lpips.TAPS[backbone][-1])
    for key, value in heads.items():
        m = re.match(r"^(?:module\.)?lin(\d)\.model\.\d\.weight$", key)
        if m:
            state[f"lins.{m.group(1)}.weight"] = value
    return checked(lpips.LPIPS(backbone), state)


def dists_state_dict(trunk: Mapping[str, torch.Tensor], alpha_beta: Mapping[str, torch.Tensor]) -> State:
    """torchvision VGG16 weights (or a full DISTS state dict) + ``{"alpha", "beta"}`` -> ``DISTS`` state dict."""
    state = trunk_features(trunk, dists.TAPS[-1])
    state["alpha"], state["beta"] = alpha_beta["alpha"], alpha_beta["beta"]
    return checked(dists.DISTS(), state)


def with_bn_counters(state: State, net: nn.Module) -> State:
    """Add the BatchNorm ``num_batches_tracked`` counters that checkpoints saved before torch 0.4.1
    (DBCNN's ``scnn.pkl``) lack; eval-mode BatchNorm never reads them."""
    counters = {k: v for k, v in net.state_dict().items() if k.endswith(".num_batches_tracked")}
    return {**{k: torch.zeros_like(v) for k, v in counters.items() if k not in state}, **state}


def dbcnn_state_dict(checkpoint: Mapping[str, torch.Tensor]) -> State:
    """A DBCNN checkpoint (``features1``, ``features2``, ``fc``; DataParallel prefix allowed) -> ``DBCNN``."""
    state = {k: v for k, v in strip_prefix(checkpoint).items() if k.split(".")[0] in ("features1", "features2", "fc")}
    net = dbcnn.DBCNN()
    return checked(net, with_bn_counters(state, net))


def dbcnn_parts_state_dict(
    trunk: Mapping[str, torch.Tensor], scnn: Mapping[str, torch.Tensor], head: Mapping[str, torch.Tensor]
) -> State:
    """torchvision VGG16 + DBCNN's S-CNN checkpoint (``module.features.N.*``; its ``projection`` and
    ``classifier``, used only to pre-train it, are dropped) + ``{"fc.weight", "fc.bias"}`` -> ``DBCNN``."""
    state = {f"features1.{k.removeprefix('features.')}": v for k, v in trunk_features(trunk, 29).items()}
    scnn = strip_prefix(scnn)
    state.update({f"features2.{k.removeprefix('features.')}": v for k, v in scnn.items() if k.startswith("features.")})
    state.update({k: v for k, v in strip_prefix(head).items() if k.startswith("fc.")})
    net = dbcnn.DBCNN()
    return checked(net, with_bn_counters(state, net))


def hyperiqa_state_dict(checkpoint: Mapping[str, torch.Tensor], backbone: hyperiqa.Backbone = "resnet50") -> State:
    """A HyperIQA ``HyperNet`` checkpoint -> ``HyperIQA`` (the backbone's unused ``res.fc`` is dropped)."""
    state = {k: v for k, v in strip_prefix(checkpoint).items() if not k.startswith("res.fc.")}
    return checked(hyperiqa.HyperIQA(backbone), state)
