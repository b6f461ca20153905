"""Bundles made in a test, with graphs built here: any appliances, any window, any output (NaN too).
They go through the same loading and checks as an exported bundle (bundle.json written by
edge.core.bundle, every checksum), so a monitor takes or refuses them as it would a real one."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import onnx
from conftest import REPO
from onnx import TensorProto, helper, numpy_helper

from edge.core.bundle import Manifest, read_manifest, write_bundle_manifest
from edge.core.decision import DecisionConfig
from edge.core.labels import Appliances
from edge.core.window import WindowConfig

BASE = REPO / "tests" / "fixtures" / "bundle-v2"


def copy_of_base(tmp: Path, name: str = "base") -> Path:
    """The repository's bundle-v2 (tiny BEATs + student), copied without its README (never touch the fixture)."""
    return Path(shutil.copytree(BASE, tmp / name, ignore=shutil.ignore_patterns("README.md")))


def toy_bundle(out: Path, labels: tuple[str, ...] = ("ac", "fridge"), probabilities: tuple[float, ...] | None = None,
               window_sec: float = 6.0, run_id: str = "toy") -> Path:
    """A bundle whose fp32 'encoder' averages the window to one frame and whose 'head' gives the
    constant `probabilities` (one per label; NaN allowed) for any audio."""
    window = WindowConfig(window_sec=window_sec)
    probabilities = probabilities or tuple(0.9 if i == len(labels) - 1 else 0.1 for i in range(len(labels)))
    out.mkdir(parents=True)
    encoder = helper.make_graph(
        [helper.make_node("ReduceMean", ["waveform"], ["mean"], axes=[1], keepdims=1),
         helper.make_node("Unsqueeze", ["mean", "axis"], ["frames"])],
        "encoder", [helper.make_tensor_value_info("waveform", TensorProto.FLOAT, ["batch", window.window_samples])],
        [helper.make_tensor_value_info("frames", TensorProto.FLOAT, ["batch", 1, 1])],
        [numpy_helper.from_array(np.array([2], dtype=np.int64), "axis")])
    head = helper.make_graph(
        [helper.make_node("Reshape", ["frames", "shape"], ["flat"]),
         helper.make_node("Mul", ["flat", "zero"], ["zeros"]),
         helper.make_node("Add", ["zeros", "constant"], ["probabilities"])],
        "head", [helper.make_tensor_value_info("frames", TensorProto.FLOAT, ["batch", 1, 1])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", len(labels)])],
        [numpy_helper.from_array(np.array([-1, 1], dtype=np.int64), "shape"),
         numpy_helper.from_array(np.zeros(1, dtype=np.float32), "zero"),
         numpy_helper.from_array(np.array([probabilities], dtype=np.float32), "constant")])
    for name, graph in (("encoder.onnx", encoder), ("head.onnx", head)):
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), out / name)
    base = Manifest.from_json(read_manifest(BASE / "bundle.json"))
    manifest = dataclasses.replace(
        base, name=out.name, window=window, decision=DecisionConfig(appliances=Appliances(tuple(labels))),
        graphs={"fp32": {"encoder": "encoder.onnx", "head": "head.onnx"}}, default_precision="fp32",
        embedding={"frames": 1, "dim": 1}, source={**base.source, "run_id": run_id}, parity={}, gflop_per_window={},
        decisions={}, files={}, schema_version=4)
    write_bundle_manifest(out, manifest)
    return out
