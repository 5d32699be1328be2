"""Map published checkpoints onto the deep scorers' state dicts (key renaming only, no maths).

Pure functions over state dicts: they neither download nor read files. A user loads the
published files with ``torch.load`` and adds the result to the weights store, e.g. for LPIPS::

    import torch, torchvision
    from iqaflow.models.nets.convert import lpips_state_dict
    from iqaflow.models.weights import get_store

    # lpips (BSD) ships the linear heads: lpips/weights/v0.1/alex.pth (or vgg.pth); its trunk is
    # torchvision's ImageNet AlexNet/VGG16 (alexnet-owt-7be5be79.pth / vgg16-397923af.pth).
    heads = torch.load("alex.pth", map_location="cpu", weights_only=True)
    trunk = torch.load("alexnet-owt-7be5be79.pth", map_location="cpu", weights_only=True)
    get_store().put_state_dict("lpips_alex.pt", lpips_state_dict(trunk, heads, "alex"))

DISTS: ``dists_state_dict(vgg16_trunk, torch.load("weights.pt"))`` with the ``alpha``/``beta``
file of the DISTS_pytorch package. DBCNN and HyperIQA checkpoints already use these module
names; ``dbcnn_state_dict`` / ``hyperiqa_state_dict`` strip DataParallel's ``module.`` prefix
and drop what the scoring nets do not hold. Every function checks the result's keys and shapes
against the target network, so a wrong file fails here, not at scoring time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

from iqaflow.errors import WeightsError
from iqaflow.models.nets import dbcnn, dists, hyperiqa, lpips

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


def dbcnn_state_dict(checkpoint: Mapping[str, torch.Tensor]) -> State:
    """A DBCNN checkpoint (``features1``, ``features2``, ``fc``; DataParallel prefix allowed) -> ``DBCNN``."""
    state = {k: v for k, v in strip_prefix(checkpoint).items() if k.split(".")[0] in ("features1", "features2", "fc")}
    return checked(dbcnn.DBCNN(), state)


def hyperiqa_state_dict(checkpoint: Mapping[str, torch.Tensor], backbone: hyperiqa.Backbone = "resnet50") -> State:
    """A HyperIQA ``HyperNet`` checkpoint -> ``HyperIQA`` (the backbone's unused ``res.fc`` is dropped)."""
    state = {k: v for k, v in strip_prefix(checkpoint).items() if not k.startswith("res.fc.")}
    return checked(hyperiqa.HyperIQA(backbone), state)
