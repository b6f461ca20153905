"""GFLOP per window counted from ONNX graphs (not typed in): matrix products, convolutions, DFTs.

Shapes come from ONNX shape inference with the batch fixed to 1. A multiply-add counts as two
operations; a DFT of length n as a radix-2 FFT, 5 n log2 n (half that for real input).
Element-wise work and softmax are left out: a few % of BEATs, about 10 % of the student.
"""

from __future__ import annotations

import math
from pathlib import Path

import onnx
from onnx import numpy_helper, shape_inference

PRODUCTS = {"MatMul", "MatMulInteger", "Gemm"}
CONVOLUTIONS = {"Conv", "ConvInteger"}


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    graph = model.graph
    for value in graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1  # one window
    inferred = shape_inference.infer_shapes(model, data_prop=True).graph
    shapes = {init.name: list(init.dims) for init in graph.initializer}
    for value in [*inferred.input, *inferred.value_info, *inferred.output]:
        dims = value.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = [d.dim_value for d in dims]
    return shapes


def _constants(graph: onnx.GraphProto) -> dict[str, int]:
    """Scalar integer constants of a graph (a DFT's length), by name."""
    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            arrays[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return {name: int(array.reshape(-1)[0]) for name, array in arrays.items() if array.size == 1 and array.dtype.kind == "i"}


def _dft_flops(node: onnx.NodeProto, shapes: dict[str, list[int]], constants: dict[str, int]) -> float:
    shape = shapes.get(node.input[0])
    if shape is None:
        raise ValueError(f"no shape for DFT node {node.name}; cannot count its operations")
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1) % len(shape)
    length = constants.get(node.input[1], shape[axis]) if len(node.input) > 1 and node.input[1] else shape[axis]
    transforms = math.prod(shape[:-1]) // shape[axis]
    return transforms * (5 if shape[-1] == 2 else 2.5) * length * math.log2(length)


def graph_flops(path: Path) -> int:
    """Operations of one window through one graph."""
    model = onnx.load(str(path))
    shapes = _shapes(model)
    constants = _constants(model.graph)
    total = 0
    for node in model.graph.node:
        if node.op_type == "DFT":
            total += int(_dft_flops(node, shapes, constants))
        elif node.op_type in PRODUCTS | CONVOLUTIONS:
            out, first, second = shapes.get(node.output[0]), shapes.get(node.input[0]), shapes.get(node.input[1])
            if out is None or first is None or second is None:
                raise ValueError(f"{path}: no shape for {node.op_type} node {node.name}; cannot count its operations")
            if node.op_type in PRODUCTS:
                transposed = node.op_type == "Gemm" and any(a.name == "transA" and a.i for a in node.attribute)
                inner = first[-2] if transposed else first[-1]
            else:  # weight [out_channels, in_channels / groups, *kernel]
                inner = math.prod(second[1:])
            total += 2 * math.prod(out) * inner
    return total


def graph_gflop(paths: list[Path]) -> float:
    """GFLOP of one window through the graphs run one after the other (encoder, head)."""
    return sum(graph_flops(path) for path in paths) / 1e9
