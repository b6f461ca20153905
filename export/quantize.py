"""int8: dynamic quantization of the encoder's weight matrix multiplications (onnxruntime).

Only MatMuls with a constant weight are quantized; the fbank's mel projection, the DFT, the
attention products and softmax stay float.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

from edge.core.proc import median_sec
from edge.engine.classifier import Classifier

FBANK_MARKER = "fbank"
# What onnxruntime's ARM64 (and x86) integer kernels run fast: unsigned activations, signed weights.
# Full 8-bit weights, not reduce_range's 7: ARM sums the products exactly, and so does x86 with the
# session option edge.engine.cpu sets where VNNI is missing. On the tiny test bundle (112 windows)
# x86 int8 with that option differs from arm64 int8 by at most 1.5e-4 (7-bit weights: 1.7e-4);
# without it, on AVX2 without VNNI, by 0.087.
QUANTIZATION = {"method": "dynamic", "activations": "uint8, per tensor, scaled at run time",
                "weights": "int8, per output channel", "operators": "MatMul with a constant weight, outside the fbank"}


def weight_matmuls(model_path: Path) -> list[str]:
    """Names of MatMul nodes whose second input is a weight initializer outside the fbank."""
    graph = onnx.load(str(model_path), load_external_data=False).graph
    initializers = {initializer.name for initializer in graph.initializer}
    return [node.name for node in graph.node
            if node.op_type == "MatMul" and node.input[1] in initializers and FBANK_MARKER not in node.input[1]]


def quantize_encoder(fp32_path: Path, int8_path: Path) -> None:
    """Write the int8 encoder, its weight MatMuls quantized (see :func:`weight_matmuls`)."""
    nodes = weight_matmuls(fp32_path)
    # The quantizer advises its pre-processing step on the root logger; that step's symbolic shape
    # inference cannot handle the fbank's DFT node, so it is skipped and the advice muted.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(fp32_path), str(int8_path), op_types_to_quantize=["MatMul"],
                         nodes_to_quantize=nodes, weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.setLevel(level)


def ms_per_window(classifier: Classifier, windows: np.ndarray, repeats: int = 3) -> float:
    """Median over `repeats` of the wall time per window for a batch of windows (after a warm-up)."""
    return 1000 * median_sec(lambda: classifier.predict(windows), repeats) / len(windows)
