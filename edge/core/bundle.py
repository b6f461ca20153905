"""The bundle: what the Pi receives. A directory of ONNX graphs plus ``bundle.json``.

This module is the only one that writes or reads ``bundle.json``: :class:`Manifest` is its
content, :func:`write_bundle_manifest` writes it (last, with every file's sha256 and size, so it
marks a complete bundle) and :func:`load_bundle` reads and validates it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from edge.core.defaults import LABELS, DecisionConfig, WindowConfig
from edge.core.files import sha256_file, write_json_atomic

SCHEMA_VERSION = 2
MANIFEST = "bundle.json"
PRECISIONS = ("fp32", "int8", "student")  # BEATs in float32, BEATs in int8, the distilled student
TEACHERS = ("fp32", "int8")
REMEDY = {"int8": "re-export with --int8", "student": "run 'humwatch distill' and re-export",
          "fp32": "re-export the float model"}


class BundleError(ValueError):
    """A bundle that cannot be used; the message names the file and the fix."""


@dataclasses.dataclass
class Manifest:
    """Everything bundle.json says. ``graphs`` maps precision -> its graphs run in order
    ({"encoder": file, "head": file} for BEATs, {"model": file} for the student); ``decision`` is
    BEATs' decision, ``decisions`` a precision's own (the student's thresholds); ``parity`` holds export's measured agreement per precision (and, for each faster one, why it is
    or is not the default); ``gflop_per_window`` the cost per precision; ``files`` every checksum."""

    name: str
    created: str
    window: WindowConfig
    decision: DecisionConfig
    graphs: dict[str, dict[str, str]]
    default_precision: str
    embedding: dict
    opset: int
    versions: dict
    source: dict
    training_metrics: dict
    parity: dict = dataclasses.field(default_factory=dict)
    gflop_per_window: dict[str, float] = dataclasses.field(default_factory=dict)  # counted from the graphs
    files: dict[str, dict] = dataclasses.field(default_factory=dict)
    decisions: dict[str, dict] = dataclasses.field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    labels: tuple[str, ...] = LABELS

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data.update(window=self.window.to_dict(), decision=self.decision.to_dict(), labels=list(self.labels))
        return data

    @classmethod
    def from_json(cls, data: dict) -> Manifest:
        required = {field.name for field in dataclasses.fields(cls)
                    if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING}
        missing = sorted(required - set(data))
        if missing:
            raise KeyError(f"missing fields {missing}")
        values = {field.name: data[field.name] for field in dataclasses.fields(cls) if field.name in data}
        values.update(window=WindowConfig.from_dict(data["window"]), decision=DecisionConfig.from_dict(data["decision"]),
                      labels=tuple(data["labels"]))
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class Bundle:
    """A bundle read from disk (checksums not verified; see :func:`verify_files`)."""

    path: Path
    manifest: Manifest

    @property
    def window(self) -> WindowConfig:
        return self.manifest.window

    @property
    def decision(self) -> DecisionConfig:
        """The decision settings of the default precision."""
        return self.decision_for(self.default_precision)

    def decision_for(self, precision: str) -> DecisionConfig:
        """A precision's decision settings: its own thresholds (the student) or BEATs'."""
        own = self.manifest.decisions.get(precision)
        return DecisionConfig.from_dict(own) if own else self.manifest.decision

    @property
    def teacher_precision(self) -> str:
        """The BEATs precision that audits the student: int8 when it met its bar, else fp32."""
        int8 = self.manifest.parity.get("int8", {})
        return "int8" if "int8" in self.manifest.graphs and int8.get("meets_bar") else "fp32"

    @property
    def precisions(self) -> tuple[str, ...]:
        return tuple(p for p in PRECISIONS if p in self.manifest.graphs)

    @property
    def default_precision(self) -> str:
        return self.manifest.default_precision

    def graph_paths(self, precision: str | None = None) -> dict[str, Path]:
        """{role: path} of a precision's graphs, in the order they run (default: the bundle's default)."""
        precision = precision or self.default_precision
        if precision not in self.manifest.graphs:
            raise BundleError(
                f"{self.path}: no {precision} model in this bundle (it has: {', '.join(self.precisions)}); "
                f"{REMEDY.get(precision, 're-export')}, or pick another --precision"
            )
        return {role: self.path / name for role, name in self.manifest.graphs[precision].items()}


def load_bundle(path: str | Path) -> Bundle:
    """Read and validate bundle.json; raise BundleError naming what is wrong."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{path}: not a bundle (no {MANIFEST}); export one with 'humwatch export --run models/<run_id>'")
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise BundleError(f"{manifest_path}: unreadable ({error}); re-export the bundle") from error
    version = data.get("schema_version") if isinstance(data, dict) else None
    if version != SCHEMA_VERSION:
        raise BundleError(
            f"{manifest_path}: schema_version {version!r}, this humwatch reads {SCHEMA_VERSION}; "
            "re-export the bundle with a matching humwatch version"
        )
    try:
        manifest = Manifest.from_json(data)
    except (KeyError, TypeError, ValueError) as error:
        raise BundleError(f"{manifest_path}: bad or missing settings ({error}); re-export the bundle") from error
    if manifest.labels != LABELS:
        raise BundleError(f"{manifest_path}: labels {list(manifest.labels)}, expected {list(LABELS)}")
    return Bundle(path, manifest)


def verify_files(bundle: Bundle) -> None:
    """Every file bundle.json lists exists with its recorded size and sha256."""
    for name, entry in bundle.manifest.files.items():
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
            if graph.name not in bundle.manifest.files:
                raise BundleError(f"{bundle.path / MANIFEST}: {precision} {role} graph {graph.name} has no checksum entry")


def write_bundle_manifest(directory: Path, manifest: Manifest) -> None:
    """Record the checksums of every graph and write bundle.json atomically (last: it marks completion)."""
    names = sorted({name for graphs in manifest.graphs.values() for name in graphs.values()})
    manifest.files = {name: {"sha256": sha256_file(directory / name), "bytes": (directory / name).stat().st_size}
                      for name in names}
    write_json_atomic(directory / MANIFEST, manifest.to_json())
