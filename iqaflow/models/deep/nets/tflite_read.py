"""Read a quantised TFLite flatbuffer into the graph state ``TFLiteNet`` runs (conversion time only).

Needs the ``tflite`` package (flatbuffer bindings, Apache-2.0; ``pip install 'iqaflow[convert]'``); the
scorers never import it: they load the state this module wrote into the weights store. Nothing is
interpreted here: integers, scales and zero points are copied as stored, operator options as read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from iqaflow.errors import WeightsError
from iqaflow.models.deep.nets.tflite_graph import GRAPH_FORMAT, SUPPORTED_OPS

_PADDING = {0: "SAME", 1: "VALID"}
# TFLite TensorType -> numpy dtype of stored constants.
_DTYPES = {2: np.int32, 3: np.uint8, 9: np.int8}


def _tflite() -> Any:
    try:
        import tflite
    except ImportError as exc:  # pragma: no cover - the dev extra installs it
        raise WeightsError("converting a .tflite file needs the 'tflite' package. Fix: pip install "
                           "'iqaflow[convert]' (or pip install tflite)") from exc
    return tflite


def _op_names(tflite: Any) -> dict[int, str]:
    ops = tflite.BuiltinOperator
    return {v: k for k, v in vars(ops).items() if not k.startswith("_")}


def _options(tflite: Any, kind: str, op: Any) -> dict[str, Any]:
    table = op.BuiltinOptions()
    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D"):
        cls = {"CONV_2D": tflite.Conv2DOptions, "DEPTHWISE_CONV_2D": tflite.DepthwiseConv2DOptions,
               "AVERAGE_POOL_2D": tflite.Pool2DOptions}[kind]
        o = cls()
        o.Init(table.Bytes, table.Pos)
        out = {"padding": _PADDING[o.Padding()], "stride_h": o.StrideH(), "stride_w": o.StrideW(),
               "activation": o.FusedActivationFunction()}
        if kind == "DEPTHWISE_CONV_2D" and o.DepthMultiplier() != 1:
            raise WeightsError(f"depth multiplier {o.DepthMultiplier()} is not supported (expected 1)")
        if kind == "AVERAGE_POOL_2D":
            out.update(filter_h=o.FilterHeight(), filter_w=o.FilterWidth())
        if kind != "AVERAGE_POOL_2D" and (o.DilationHFactor() != 1 or o.DilationWFactor() != 1):
            raise WeightsError("dilated convolutions are not supported")
        return out
    if kind == "ADD":
        o = tflite.AddOptions()
        o.Init(table.Bytes, table.Pos)
        return {"activation": o.FusedActivationFunction()}
    if kind == "SOFTMAX":
        o = tflite.SoftmaxOptions()
        o.Init(table.Bytes, table.Pos)
        return {"beta": float(o.Beta())}
    return {}


def _constant(model: Any, tensor: Any) -> dict[str, Any] | None:
    data = model.Buffers(tensor.Buffer()).DataAsNumpy()
    if isinstance(data, int) or data is None or len(data) == 0:
        return None  # an activation, not a constant
    dtype = _DTYPES.get(tensor.Type())
    if dtype is None:
        raise WeightsError(f"constant {tensor.Name().decode()!r} has TFLite type {tensor.Type()}, expected a "
                           "quantised integer tensor")
    q = np.frombuffer(data.tobytes(), dtype=dtype).reshape(tensor.ShapeAsNumpy())
    quant = tensor.Quantization()
    scale, zero = quant.ScaleAsNumpy(), quant.ZeroPointAsNumpy()
    if isinstance(scale, int):
        raise WeightsError(f"constant {tensor.Name().decode()!r} has no quantisation parameters")
    return {"q": torch.from_numpy(q.astype(np.int32) if dtype is np.int32 else q.copy()),
            "scale": torch.tensor(np.asarray(scale, dtype=np.float64)),
            "zero": torch.tensor(np.asarray(zero, dtype=np.int64)),
            "axis": int(quant.QuantizedDimension())}


def read_tflite(path: str | Path) -> dict[str, Any]:
    """The graph state of a single-subgraph TFLite model: operators, constants, tensor names.

    Bias constants are int32 with scale ``input_scale * weight_scale``, as the format stores them, so
    dequantising them needs nothing beyond what is recorded here.
    """
    tflite = _tflite()
    buf = Path(path).read_bytes()
    model = tflite.Model.GetRootAsModel(buf, 0)
    if model.SubgraphsLength() != 1:
        raise WeightsError(f"{path}: {model.SubgraphsLength()} subgraphs, expected 1")
    graph = model.Subgraphs(0)
    names = _op_names(tflite)
    ops, tensors, used = [], {}, set()
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        kind = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")
        if kind not in SUPPORTED_OPS:
            raise WeightsError(f"{path}: operator {i} is {kind}, not one of {SUPPORTED_OPS}")
        inputs = [int(v) for v in op.InputsAsNumpy()]
        if kind == "RESHAPE":
            inputs = inputs[:1]  # the shape operand: the executor keeps the batch and flattens the rest
        ops.append({"op": kind, "inputs": inputs, "outputs": [int(v) for v in op.OutputsAsNumpy()],
                    **_options(tflite, kind, op)})
        used.update(inputs)
    for index in sorted(used):
        const = _constant(model, graph.Tensors(index))
        if const is not None:
            tensors[index] = const
    inputs = [int(v) for v in graph.InputsAsNumpy()]
    if len(inputs) != 1:
        raise WeightsError(f"{path}: {len(inputs)} graph inputs, expected one image")
    # A fused operator's tensor is named after every op folded into it ("a/Relu6;a/add_fold;..."): the first
    # one is the layer's own name.
    tensor_names = {graph.Tensors(op["outputs"][0]).Name().decode().split(";")[0]: op["outputs"][0] for op in ops}
    quant = graph.Tensors(inputs[0]).Quantization()
    return {"format": GRAPH_FORMAT, "ops": ops, "tensors": tensors, "input": inputs[0], "names": tensor_names,
            "input_scale": float(quant.ScaleAsNumpy()[0]), "input_zero": int(quant.ZeroPointAsNumpy()[0]),
            "output": int(graph.OutputsAsNumpy()[0])}
