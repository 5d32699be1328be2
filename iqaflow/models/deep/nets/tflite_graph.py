"""Run a quantised TFLite image classifier (MobileNet v1/v2) in float torch.

``iqaflow.models.deep.nets.tflite_read`` turns a ``.tflite`` flatbuffer into a *graph state*: the operator
list in execution order and every constant tensor as its stored integers plus scale and zero point
(per channel where given). That state is what ships (int8 is 4x smaller than float and loses nothing
against the published file); ``TFLiteNet`` dequantises it once at construction and executes the
operators in float, NCHW, batched. Activations are not re-quantised between layers, which is the point:
the float network is what the int8 one approximates.

TensorFlow's ``SAME`` padding is asymmetric for even sizes and stride 2 (the extra row and column go at
the bottom and right), unlike torch's symmetric ``padding=``: ``same_padding`` computes it, and only the
asymmetric cases pad explicitly.

Supported operators: CONV_2D, DEPTHWISE_CONV_2D, ADD, AVERAGE_POOL_2D, RESHAPE, SOFTMAX (what the
ImageNet MobileNets use); anything else is refused when the state is read.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from iqaflow.errors import WeightsError

SUPPORTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "AVERAGE_POOL_2D", "RESHAPE", "SOFTMAX")
GRAPH_FORMAT = 1
# TFLite ActivationFunctionType: NONE, RELU, RELU6 (in place: the op's output is a fresh tensor).
_ACTIVATIONS = {0: None, 1: F.relu_, 3: lambda y: F.hardtanh_(y, 0.0, 6.0)}


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, axis: int) -> torch.Tensor:
    """``(q - zero) * scale``, per tensor or per channel along ``axis``."""
    shape = [1] * q.ndim
    if scale.numel() > 1:
        shape[axis] = -1
    return (q.double() - zero.double().reshape(shape)) * scale.double().reshape(shape)


def same_padding(size: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int]) -> list[int]:
    """TensorFlow ``SAME`` padding as ``F.pad``'s (left, right, top, bottom): ``out = ceil(in / stride)``,
    the odd pixel after, not before."""
    pads = []
    for n, k, s in ((size[1], kernel[1], stride[1]), (size[0], kernel[0], stride[0])):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    return pads


class TFLiteNet(nn.Module):
    """The float network of a graph state; ``forward`` returns the tensors named in ``outputs`` (NCHW, or
    ``(N, C)`` after RESHAPE), computing no operator after the last one asked for.

    Inputs are the graph input's *real* values (for the ImageNet MobileNets ``(u - 128) / 128`` of the
    uint8 pixels ``u``), NCHW. ``global_pool`` makes AVERAGE_POOL_2D average the whole map whatever its
    size, so the network accepts inputs larger than the 224x224 it was made for.
    """

    def __init__(self, graph: dict[str, Any], global_pool: bool = True) -> None:
        super().__init__()
        if graph.get("format") != GRAPH_FORMAT:
            raise WeightsError(f"graph state format {graph.get('format')!r}, expected {GRAPH_FORMAT}. Fix: convert "
                               "the .tflite file again with iqaflow.models.deep.nets.tflite_read.read_tflite")
        self.ops: list[dict[str, Any]] = [dict(op) for op in graph["ops"]]
        self.input_index = int(graph["input"])
        self.names: dict[str, int] = {str(k): int(v) for k, v in graph["names"].items()}
        self.global_pool = global_pool
        for op in self.ops:
            if op["op"] not in SUPPORTED_OPS:
                raise WeightsError(f"TFLite operator {op['op']} is not supported (supported: {SUPPORTED_OPS})")
        self._producer = {out: k for k, op in enumerate(self.ops) for out in op["outputs"]}
        self.consts = nn.ParameterDict()
        for key, t in graph["tensors"].items():
            value = dequantize(t["q"], t["scale"], t["zero"], int(t["axis"])).float()
            self.consts[str(key)] = nn.Parameter(self._to_torch_layout(int(key), value), requires_grad=False)

    def _to_torch_layout(self, index: int, value: torch.Tensor) -> torch.Tensor:
        for op in self.ops:
            if len(op["inputs"]) > 1 and op["inputs"][1] == index:
                if op["op"] == "CONV_2D":  # OHWI -> OIHW
                    return value.permute(0, 3, 1, 2).contiguous()
                if op["op"] == "DEPTHWISE_CONV_2D":  # 1HW(C*M) -> (C*M)1HW
                    return value.permute(3, 0, 1, 2).contiguous()
        return value

    def _const(self, index: int) -> torch.Tensor:
        return self.consts[str(index)]

    def _conv(self, op: dict[str, Any], x: torch.Tensor, depthwise: bool) -> torch.Tensor:
        w, b = self._const(op["inputs"][1]), self._const(op["inputs"][2])
        stride = (int(op["stride_h"]), int(op["stride_w"]))
        padding: tuple[int, int] = (0, 0)
        if op["padding"] == "SAME":
            left, right, top, bottom = same_padding((x.shape[-2], x.shape[-1]), (w.shape[2], w.shape[3]), stride)
            if left == right and top == bottom:  # symmetric (stride 1): let the convolution pad, no copy
                padding = (top, left)
            else:
                x = F.pad(x, [left, right, top, bottom])
        groups = x.shape[1] if depthwise else 1
        y = F.conv2d(x, w, b, stride=stride, padding=padding, groups=groups)
        act = _ACTIVATIONS[int(op["activation"])]
        return act(y) if act is not None else y

    def _run(self, op: dict[str, Any], values: dict[int, torch.Tensor]) -> torch.Tensor:
        kind, ins = op["op"], op["inputs"]
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            return self._conv(op, values[ins[0]], kind == "DEPTHWISE_CONV_2D")
        if kind == "ADD":
            y = values[ins[0]] + values[ins[1]]
            act = _ACTIVATIONS[int(op["activation"])]
            return act(y) if act is not None else y
        if kind == "AVERAGE_POOL_2D":
            x = values[ins[0]]
            if self.global_pool:
                return x.mean(dim=(2, 3), keepdim=True)
            return F.avg_pool2d(x, (int(op["filter_h"]), int(op["filter_w"])),
                                (int(op["stride_h"]), int(op["stride_w"])))
        if kind == "RESHAPE":
            return values[ins[0]].reshape(values[ins[0]].shape[0], -1)
        return torch.softmax(values[ins[0]] * float(op["beta"]), dim=-1)  # SOFTMAX

    def forward(self, x: torch.Tensor, outputs: tuple[str, ...]) -> list[torch.Tensor]:
        want = [self.names[n] for n in outputs]
        values = {self.input_index: x}
        last = max(self._producer[i] for i in want)
        for op in self.ops[: last + 1]:
            values[op["outputs"][0]] = self._run(op, values)
        return [values[i] for i in want]
