"""The bundle: what the Pi receives. A directory of ONNX graphs plus ``bundle.json``.

This module is the only one that writes or reads ``bundle.json``: :class:`Manifest` is its
content, :class:`FloatParity` and :class:`PrecisionReport` its parity entries,
:func:`write_bundle_manifest` writes it (last, with every file's sha256 and size, so it marks a
complete bundle) and :func:`load_bundle` reads it and validates every field, each error naming
the field and the file. A graph is a plain file name inside the bundle; :meth:`Bundle.checked_graph`
is the one way to it, checked against bundle.json, so the file hashed is the file run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import stat
from pathlib import Path
from typing import Any, Iterator

from edge.core.decision import DecisionConfig
from edge.core.fields import FieldError, Fields
from edge.core.files import sha256_file, write_json_atomic
from edge.core.labels import SEED, Appliances, LabelError
from edge.core.window import WindowConfig

SCHEMA_VERSION = 4  # 4: levels keyed by appliance; 3: any appliances (labels and priority, flat levels t_NAME,
READABLE_VERSIONS = (2, 3, SCHEMA_VERSION)  # NAME_on, NAME_off); 2: the AC and the fridge. All still read.
MANIFEST = "bundle.json"
MAX_MANIFEST_BYTES = 1_000_000  # today's bundle.json is under 10 kB
MAX_DEPTH = 16  # today's nests 4 deep
PRECISIONS = ("fp32", "int8", "student")  # BEATs in float32, BEATs in int8, the distilled student
REFERENCE = "fp32"  # every bundle has it; the other precisions are measured against it
REMEDY = {"int8": "re-export with --int8", "student": "run 'humwatch distill' and re-export",
          "fp32": "re-export the float model"}
PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class BundleError(ValueError):
    """A bundle that cannot be used; the message names the file and the fix."""


def plain_name(value: Any, field: str) -> str:
    """A file name inside the bundle directory: no path, no link out, nothing hidden."""
    if not isinstance(value, str) or not PLAIN_NAME.fullmatch(value):
        raise FieldError(f"{field}: {value!r} is not a plain file name inside the bundle "
                         "(letters, digits, '.', '_' and '-'; no '/', '\\\\' or '..')")
    return value


def _json(record) -> dict:
    """A record's JSON form: lists for tuples, records nested as their JSON, optional extras left out when unset."""
    data = {}
    for field in dataclasses.fields(record):
        value = getattr(record, field.name)
        if value is None and field.name in record.OPTIONAL:
            continue
        data[field.name] = (value.to_json() if hasattr(value, "to_json") else
                            list(value) if isinstance(value, tuple) else value)
    return data


@dataclasses.dataclass(frozen=True)
class FloatParity:
    """torch against onnxruntime for one precision's float graphs (bundle.json ``parity.fp32``, and a
    student report's ``float_parity``): probabilities within ``tolerance`` and the same file states,
    on validation windows plus edge cases. Export refuses a bundle that did not pass. Optional:
    ``max_abs_diff_by_appliance``, the largest |Δprob| of each output (schema 3; older bundles lack it);
    ``tolerance_unit`` "logit" (export.parity's rule: ``tolerance`` bounds |Δz|, the largest is
    ``max_logit_diff`` at ``worst``; ``tolerance_set_by`` "default" or "--parity-tolerance"): older
    bundles lack them, and their ``tolerance`` bounds |Δprob|."""

    windows: int
    max_abs_diff: float
    mean_abs_diff: float
    files: int
    state_agreement: float
    disagreeing_files: tuple[str, ...]
    edge_cases: dict[str, float]
    tolerance: float
    passed: bool
    max_abs_diff_by_appliance: dict[str, float] | None = None
    tolerance_unit: str | None = None
    tolerance_set_by: str | None = None
    max_logit_diff: float | None = None
    worst: str | None = None
    OPTIONAL = ("max_abs_diff_by_appliance", "tolerance_unit", "tolerance_set_by", "max_logit_diff", "worst")

    def to_json(self) -> dict:
        return _json(self)

    @classmethod
    def from_json(cls, data: Any, where: str = "") -> FloatParity:
        """The record of :meth:`to_json`; a FieldError names a wrong field by its path under `where`."""
        fields = Fields(data, where)
        fields.only(*(field.name for field in dataclasses.fields(cls)))
        return cls(windows=fields.integer("windows"), max_abs_diff=fields.number("max_abs_diff", 0),
                   mean_abs_diff=fields.number("mean_abs_diff", 0), files=fields.integer("files"),
                   state_agreement=fields.number("state_agreement", 0, 1),
                   disagreeing_files=fields.texts("disagreeing_files"), edge_cases=fields.numbers("edge_cases", 0),
                   tolerance=fields.number("tolerance", 0), passed=fields.flag("passed"),
                   max_abs_diff_by_appliance=fields.numbers("max_abs_diff_by_appliance", 0, default=None),
                   tolerance_unit=fields.text("tolerance_unit", default=None, choices=("logit",)),
                   tolerance_set_by=fields.text("tolerance_set_by", default=None,
                                                choices=("default", "--parity-tolerance")),
                   max_logit_diff=fields.number("max_logit_diff", 0, default=None),
                   worst=fields.text("worst", default=None))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Agreement:
    """How far a faster precision (int8, the student) is from BEATs fp32: ``evidence`` counts what was
    compared (validation files, windows, streamed hops, edge cases, the batch size); the agreement
    of file states and of debounced states streamed hop by hop, each model with its own decision
    settings; per edge case the largest |Δprob|, and per output (``max_abs_diff_by_appliance``,
    schema 3 on: older bundles lack it); its share of fp32's FLOPs; the bar it had to meet to become
    the default, whether it did and why."""

    evidence: dict[str, int]
    max_abs_diff: float
    mean_abs_diff: float
    files: int
    state_agreement: float
    disagreeing_files: tuple[str, ...]
    debounced_hop_agreement: float
    edge_cases: dict[str, float]
    flop_share: float | None
    default_bar: dict[str, float]
    meets_bar: bool
    default_reason: str
    max_abs_diff_by_appliance: dict[str, float] | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class PrecisionReport(Agreement):
    """A faster precision's :class:`Agreement` with fp32, and its size and speed (bundle.json
    ``parity.<precision>``). Optional: int8's ``quantization``, the student's ``float_parity`` (its
    torch model against its graph) and ``distilled_from``, ``measured_on``: where the speed was
    measured (machine, CPU, onnxruntime version, kernel mode ...; a flat object)."""

    model_bytes: int
    fp32_model_bytes: int
    fp32_ms_per_window: float
    ms_per_window: float
    speedup_vs_fp32: float
    quantization: dict | None = None
    float_parity: FloatParity | None = None
    distilled_from: str | None = None
    measured_on: dict | None = None
    OPTIONAL = ("quantization", "float_parity", "distilled_from", "measured_on", "max_abs_diff_by_appliance")

    @classmethod
    def measured(cls, agreement: Agreement, **figures) -> PrecisionReport:
        """The report of `agreement` with the precision's size, speed and optional `figures`."""
        return cls(**{field.name: getattr(agreement, field.name) for field in dataclasses.fields(Agreement)}, **figures)

    def to_json(self) -> dict:
        return _json(self)

    @classmethod
    def from_json(cls, data: Any, where: str = "") -> PrecisionReport:
        """The record of :meth:`to_json`; a FieldError names a wrong field by its path under `where`."""
        fields = Fields(data, where)
        fields.only(*(field.name for field in dataclasses.fields(cls)))
        evidence = fields.object("evidence")
        parity = fields.object("float_parity", default=None)
        return cls(
            evidence={name: evidence.integer(name) for name in evidence.data},
            max_abs_diff=fields.number("max_abs_diff", 0), mean_abs_diff=fields.number("mean_abs_diff", 0),
            files=fields.integer("files"), state_agreement=fields.number("state_agreement", 0, 1),
            disagreeing_files=fields.texts("disagreeing_files"),
            debounced_hop_agreement=fields.number("debounced_hop_agreement", 0, 1),
            edge_cases=fields.numbers("edge_cases", 0), flop_share=fields.number("flop_share", 0, default=None),
            default_bar=fields.numbers("default_bar", 0), meets_bar=fields.flag("meets_bar"),
            default_reason=fields.text("default_reason"), model_bytes=fields.integer("model_bytes"),
            fp32_model_bytes=fields.integer("fp32_model_bytes"),
            fp32_ms_per_window=fields.number("fp32_ms_per_window", 0),
            ms_per_window=fields.number("ms_per_window", 0), speedup_vs_fp32=fields.number("speedup_vs_fp32", 0),
            quantization=fields.scalars("quantization", default=None),
            float_parity=FloatParity.from_json(parity.data, parity.where) if parity is not None else None,
            distilled_from=fields.text("distilled_from", default=None),
            measured_on=fields.scalars("measured_on", default=None),
            max_abs_diff_by_appliance=fields.numbers("max_abs_diff_by_appliance", 0, default=None),
        )


@dataclasses.dataclass
class Manifest:
    """Everything bundle.json says. ``graphs`` maps precision -> its graphs run in order
    ({"encoder": file, "head": file} for BEATs, {"model": file} for the student); ``decision`` is
    BEATs' decision, ``decisions`` a precision's own (the student's thresholds); ``parity`` holds
    the JSON form of export's reports (fp32: :class:`FloatParity`, the others:
    :class:`PrecisionReport`; read them with :meth:`float_parity` and :meth:`report`);
    ``gflop_per_window`` the cost per precision; ``files`` every checksum."""

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

    @property
    def appliances(self) -> Appliances:
        """The model's outputs, in order, and the summary state's priority."""
        return self.decision.appliances

    @property
    def labels(self) -> tuple[str, ...]:
        return self.appliances.names

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data.update(window=self.window.to_dict(), decision=self.decision.to_dict(), **self.appliances.to_dict())
        return data

    def float_parity(self) -> FloatParity | None:
        """fp32's parity with torch (None when export recorded none)."""
        entry = self.parity.get(REFERENCE)
        return None if entry is None else FloatParity.from_json(entry, f"parity.{REFERENCE}")

    def report(self, precision: str) -> PrecisionReport | None:
        """A faster precision's agreement with fp32 (None for fp32, or when export recorded none)."""
        entry = self.parity.get(precision)
        return None if entry is None or precision == REFERENCE else PrecisionReport.from_json(entry, f"parity.{precision}")

    @classmethod
    def from_json(cls, data: Any) -> Manifest:
        """The manifest of a bundle.json document, every field checked; a FieldError names a wrong one."""
        fields = Fields(data)
        version = fields.integer("schema_version")
        if version not in READABLE_VERSIONS:
            raise FieldError(f"schema_version {version}, this humwatch reads {' and '.join(map(str, READABLE_VERSIONS))} "
                             "(export with the humwatch version the edge runs)")
        fields.only(*(field.name for field in dataclasses.fields(cls)), "labels", "priority")
        appliances = _appliances(fields, version)
        graphs = _graphs(fields)
        default_precision = fields.text("default_precision", choices=PRECISIONS)
        if default_precision not in graphs:
            raise FieldError(f"default_precision: {default_precision!r} has no graphs (it has: {', '.join(graphs)})")
        files = _files(fields)
        for precision, roles in graphs.items():
            for role, name in roles.items():
                if name not in files:
                    raise FieldError(f"graphs.{precision}.{role}: {name} has no checksum entry in files")
        parity = _per_precision(fields, "parity", graphs)
        for precision in parity.data:
            parse = FloatParity.from_json if precision == REFERENCE else PrecisionReport.from_json
            parse(parity.data[precision], parity.name(precision))
        decisions = _per_precision(fields, "decisions", graphs)
        for precision in decisions.data:
            DecisionConfig.from_dict(decisions.data[precision], decisions.name(precision), appliances)
        gflop = _per_precision(fields, "gflop_per_window", graphs)
        for precision in gflop.data:
            gflop.number(precision, 0, low_open=True)
        embedding = fields.object("embedding")
        embedding.integer("frames", 1)
        embedding.integer("dim", 1)
        for name in ("source", "training_metrics"):
            fields.object(name)
        return cls(name=fields.text("name"), created=fields.text("created"),
                   window=WindowConfig.from_dict(fields.object("window").data, "window"),
                   decision=DecisionConfig.from_dict(fields.object("decision").data, "decision", appliances),
                   graphs=graphs, default_precision=default_precision, embedding=embedding.data,
                   opset=fields.integer("opset", 1, 1000), versions=fields.scalars("versions"),
                   source=fields.data["source"], training_metrics=fields.data["training_metrics"],
                   parity=parity.data, gflop_per_window=gflop.data, files=files, decisions=decisions.data,
                   schema_version=version)


def _appliances(fields: Fields, version: int) -> Appliances:
    """The labels (the model's outputs) and their priority; schema 2 knew only the seed's two."""
    if version == 2:
        labels = fields.texts("labels", default=SEED.names)
        if tuple(labels) != SEED.names:
            raise FieldError(f"labels: {list(labels)}, but schema_version 2 bundles hear {list(SEED.names)}")
        return SEED
    labels = fields.texts("labels")
    try:
        Appliances(labels)
    except LabelError as error:
        raise FieldError(f"labels: {error}") from error
    try:
        return Appliances(labels, fields.texts("priority"))
    except LabelError as error:
        raise FieldError(f"priority: {error}") from error


def _graphs(fields: Fields) -> dict[str, dict[str, str]]:
    """{precision: {role: file name}}: known precisions, fp32 among them, plain file names."""
    graphs = fields.object("graphs")
    for precision in graphs.data:
        if precision not in PRECISIONS:
            raise FieldError(f"{graphs.name(precision)}: unknown precision (known: {', '.join(PRECISIONS)})")
        roles = graphs.object(precision)
        if not roles.data:
            raise FieldError(f"{roles.where}: no graphs")
        for role in roles.data:
            plain_name(roles.text(role), roles.name(role))
    if REFERENCE not in graphs.data:
        raise FieldError(f"graphs.{REFERENCE}: missing (every bundle has the float model)")
    return {precision: dict(roles) for precision, roles in graphs.data.items()}


def _files(fields: Fields) -> dict[str, dict]:
    """{file name: {"sha256": hex, "bytes": size}}."""
    files = fields.object("files", default={})
    if isinstance(files, dict):
        return files
    for name in files.data:
        plain_name(name, files.name(name))
        entry = files.object(name)
        entry.only("sha256", "bytes")
        if not re.fullmatch(r"[0-9a-f]{64}", entry.text("sha256")):
            raise FieldError(f"{entry.name('sha256')}: not a sha256 (64 lower-case hex digits)")
        entry.integer("bytes")
    return files.data


def _per_precision(fields: Fields, key: str, graphs: dict) -> Fields:
    """An object keyed by precision (absent: empty), each a precision the bundle has graphs for."""
    entries = fields.object(key, default={})
    entries = entries if isinstance(entries, Fields) else Fields({}, key)
    for precision in entries.data:
        if precision not in graphs:
            raise FieldError(f"{entries.name(precision)}: no such precision among the graphs ({', '.join(graphs)})")
    return entries


@dataclasses.dataclass(frozen=True)
class Bundle:
    """A bundle read from disk; its graphs' bytes are checked as they are read (:meth:`checked_graph`)."""

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
        if not own:
            return self.manifest.decision
        return DecisionConfig.from_dict(own, f"decisions.{precision}", self.manifest.appliances)

    @property
    def teacher_precision(self) -> str:
        """The BEATs precision that audits the student: int8 when it met its bar, else fp32."""
        int8 = self.manifest.report("int8")
        return "int8" if "int8" in self.manifest.graphs and int8 and int8.meets_bar else REFERENCE

    @property
    def precisions(self) -> tuple[str, ...]:
        return tuple(p for p in PRECISIONS if p in self.manifest.graphs)

    @property
    def default_precision(self) -> str:
        return self.manifest.default_precision

    def graph_names(self, precision: str | None = None) -> dict[str, str]:
        """{role: file name} of a precision's graphs, in the order they run (default: the bundle's default)."""
        precision = precision or self.default_precision
        if precision not in self.manifest.graphs:
            raise BundleError(
                f"{self.path}: no {precision} model in this bundle (it has: {', '.join(self.precisions)}); "
                f"{REMEDY.get(precision, 're-export')}, or pick another --precision"
            )
        return dict(self.manifest.graphs[precision])

    def graph_paths(self, precision: str | None = None) -> dict[str, Path]:
        """{role: path} of a precision's graphs, in the order they run (default: the bundle's default)."""
        return {role: self.graph_file(name) for role, name in self.graph_names(precision).items()}

    def graph_file(self, name: str) -> Path:
        """The path of the bundle's file `name`: a plain name, and no link out of the bundle."""
        try:
            path = self.path / plain_name(name, "graph")
        except FieldError as error:
            raise BundleError(f"{self.path / MANIFEST}: {error}") from error
        real = path.resolve()
        if real.parent != self.path.resolve():
            raise BundleError(f"{path}: a link to {real}, outside the bundle; copy the file itself into {self.path}")
        return path

    @contextlib.contextmanager
    def checked_graph(self, name: str) -> Iterator[str]:
        """A path to the bundle's file `name` as it was opened and checked against the size and sha256
        bundle.json records (a bundle being exported has no checksums yet). Where /proc exists (Linux:
        a Pi, a container) it is the open file itself, /proc/self/fd/N, so what onnxruntime loads is
        the very file hashed, and no second copy of a large graph is held in memory; elsewhere it is
        the file's path, opened again after the check."""
        path = self.graph_file(name)
        entry = self.manifest.files.get(name)
        try:  # the link was resolved above; a link swapped in since then is refused by O_NOFOLLOW
            handle = os.open(path.resolve(), os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError as error:
            raise BundleError(f"{path}: missing from the bundle; copy the whole bundle directory again") from error
        except OSError as error:
            raise BundleError(f"{path}: cannot be read ({error.strerror}); copy the bundle again") from error
        with os.fdopen(handle, "rb") as file:
            info = os.fstat(file.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise BundleError(f"{path}: not a regular file; copy the bundle again")
            if entry is not None and info.st_size != entry["bytes"]:
                raise BundleError(_mismatch(path))
            digest, size = hashlib.sha256(), 0
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
                size += len(block)
            if entry is not None and (size != entry["bytes"] or digest.hexdigest() != entry["sha256"]):
                raise BundleError(_mismatch(path))
            opened = Path(f"/proc/self/fd/{file.fileno()}")
            yield str(opened if opened.exists() else path)


def _mismatch(path: Path) -> str:
    return f"{path}: checksum mismatch with {MANIFEST} (altered or incompletely copied); copy the bundle again"


def _depth(value: Any) -> int:
    """How deep lists and objects nest in a JSON value (iteratively: no recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def read_manifest(manifest_path: Path) -> dict:
    """bundle.json as JSON, refused when over MAX_MANIFEST_BYTES or nested deeper than MAX_DEPTH."""
    try:
        with open(manifest_path, "rb") as file:
            raw = file.read(MAX_MANIFEST_BYTES + 1)
        if len(raw) > MAX_MANIFEST_BYTES:
            raise BundleError(f"{manifest_path}: over {MAX_MANIFEST_BYTES // 1_000_000} MB, not a bundle.json "
                              "humwatch wrote; re-export the bundle")
        data = json.loads(raw.decode("utf-8"))
    except RecursionError as error:
        raise BundleError(f"{manifest_path}: nested deeper than {MAX_DEPTH} levels; re-export the bundle") from error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(f"{manifest_path}: unreadable ({error}); re-export the bundle") from error
    if _depth(data) > MAX_DEPTH:
        raise BundleError(f"{manifest_path}: nested deeper than {MAX_DEPTH} levels; re-export the bundle")
    return data


def load_bundle(path: str | Path) -> Bundle:
    """Read bundle.json and validate every field; a BundleError names the file, the field and the fix."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{path}: not a bundle (no {MANIFEST}); export one with 'humwatch export --run models/<run_id>'")
    try:
        manifest = Manifest.from_json(read_manifest(manifest_path))
    except FieldError as error:
        raise BundleError(f"{manifest_path}: {error}; re-export the bundle") from error
    return Bundle(path, manifest)


def verify_files(bundle: Bundle) -> None:
    """Every file bundle.json lists is in the bundle with its recorded size and sha256."""
    for name in bundle.manifest.files:
        with bundle.checked_graph(name):
            pass


def write_bundle_manifest(directory: Path, manifest: Manifest) -> None:
    """Record the checksums of every graph and write bundle.json atomically (last: it marks completion)."""
    names = sorted({name for graphs in manifest.graphs.values() for name in graphs.values()})
    manifest.files = {name: {"sha256": sha256_file(directory / name), "bytes": (directory / name).stat().st_size}
                      for name in names}
    write_json_atomic(directory / MANIFEST, manifest.to_json())
