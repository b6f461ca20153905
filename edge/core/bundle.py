"""The bundle: what the Pi receives. A directory of ONNX graphs plus ``bundle.json``.

``bundle.json`` names every file with its sha256 and size, the labels, the window config, the
decision parameters, versions, provenance, training metrics and the export parity report.
This module reads and checks bundles; the export step writes them through :func:`write_manifest`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from edge.core.defaults import LABELS, DecisionConfig, WindowConfig
from edge.core.files import sha256_file, write_json_atomic

SCHEMA_VERSION = 1
MANIFEST = "bundle.json"
PRECISIONS = ("fp32", "int8")


class BundleError(ValueError):
    """A bundle that cannot be used; the message names the file and the fix."""


def decision_to_manifest(config: DecisionConfig) -> dict:
    """The bundle.json fields that hold a DecisionConfig."""
    return {
        "thresholds": {"ac": config.t_ac, "fridge": config.t_fridge},
        "hysteresis": {
            "ac": {"on": config.ac_on, "off": config.ac_off},
            "fridge": {"on": config.fridge_on, "off": config.fridge_off},
        },
        "aggregation_n": config.median_n,
        "debounce_k": config.debounce_k,
    }


def decision_from_manifest(manifest: dict) -> DecisionConfig:
    hysteresis = manifest["hysteresis"]
    return DecisionConfig(
        t_ac=manifest["thresholds"]["ac"],
        t_fridge=manifest["thresholds"]["fridge"],
        ac_on=hysteresis["ac"]["on"],
        ac_off=hysteresis["ac"]["off"],
        fridge_on=hysteresis["fridge"]["on"],
        fridge_off=hysteresis["fridge"]["off"],
        median_n=manifest["aggregation_n"],
        debounce_k=manifest["debounce_k"],
    )


@dataclasses.dataclass(frozen=True)
class Bundle:
    """A bundle read from disk (checksums not verified; see :func:`verify_files`)."""

    path: Path
    manifest: dict
    window: WindowConfig
    decision: DecisionConfig

    @property
    def precisions(self) -> tuple[str, ...]:
        return tuple(p for p in PRECISIONS if p in self.manifest["graphs"])

    @property
    def default_precision(self) -> str:
        return self.manifest["default_precision"]

    def graph_paths(self, precision: str | None = None) -> dict[str, Path]:
        """{'encoder': path, 'head': path} of a precision (default: the bundle's default)."""
        precision = precision or self.default_precision
        if precision not in self.manifest["graphs"]:
            raise BundleError(
                f"{self.path}: no {precision} model in this bundle (it has: {', '.join(self.precisions)}); "
                f"re-export with {'--int8' if precision == 'int8' else 'the float model'} or pick another --precision"
            )
        return {role: self.path / name for role, name in self.manifest["graphs"][precision].items()}


_REQUIRED = ("schema_version", "labels", "window", "graphs", "default_precision", "files",
             "thresholds", "hysteresis", "aggregation_n", "debounce_k")


def load_bundle(path: str | Path) -> Bundle:
    """Read and validate bundle.json; raise BundleError naming what is wrong."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{path}: not a bundle (no {MANIFEST}); export one with 'humwatch export --run models/<run_id>'")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise BundleError(f"{manifest_path}: unreadable ({error}); re-export the bundle") from error
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(
            f"{manifest_path}: schema_version {version!r}, this humwatch reads {SCHEMA_VERSION}; "
            "re-export the bundle with a matching humwatch version"
        )
    missing = [key for key in _REQUIRED if key not in manifest]
    if missing:
        raise BundleError(f"{manifest_path}: missing fields {missing}; re-export the bundle")
    if tuple(manifest["labels"]) != LABELS:
        raise BundleError(f"{manifest_path}: labels {manifest['labels']}, expected {list(LABELS)}")
    try:
        window = WindowConfig.from_dict(manifest["window"])
        decision = decision_from_manifest(manifest)
    except (KeyError, TypeError, ValueError) as error:
        raise BundleError(f"{manifest_path}: bad window or decision settings ({error})") from error
    return Bundle(path, manifest, window, decision)


def verify_files(bundle: Bundle) -> None:
    """Every file bundle.json lists exists with its recorded size and sha256."""
    for name, entry in bundle.manifest["files"].items():
        file_path = bundle.path / name
        if not file_path.is_file():
            raise BundleError(f"{file_path}: missing from the bundle; copy the whole bundle directory again")
        if file_path.stat().st_size != entry["bytes"] or sha256_file(file_path) != entry["sha256"]:
            raise BundleError(
                f"{file_path}: checksum mismatch with {MANIFEST} (altered or incompletely copied); "
                "copy the bundle again"
            )
    for precision in bundle.precisions:
        for role, graph in bundle.graph_paths(precision).items():
            if graph.name not in bundle.manifest["files"]:
                raise BundleError(f"{bundle.path / MANIFEST}: {precision} {role} graph {graph.name} has no checksum entry")


def file_entry(path: Path) -> dict:
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def write_manifest(directory: Path, manifest: dict) -> None:
    """Add checksums of the graphs and write bundle.json atomically (last, so it marks completion)."""
    names = sorted({name for graphs in manifest["graphs"].values() for name in graphs.values()})
    manifest = {"schema_version": SCHEMA_VERSION, "labels": list(LABELS), **manifest,
                "files": {name: file_entry(directory / name) for name in names}}
    write_json_atomic(directory / MANIFEST, manifest)
