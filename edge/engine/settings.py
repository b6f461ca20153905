"""The engine's options (batch, stream, and every monitor): what decides, as one record
(edge.core.options makes its command-line options and reads it from a settings file)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from edge.core.bundle import PRECISIONS
from edge.core.decision import MAX_SPAN_SEC, DecisionOverrides
from edge.core.hearing import SIGNAL_FLOOR_DBFS, SILENT_DBFS
from edge.core.options import PROBABILITY, PathText, Range, SettingsError, TextRule, setting


def hop_rule(text: str) -> float | None:
    """Seconds between decisions, or "auto": edge.engine.pacing.parse_hop, imported only when an option
    is checked (pacing loads onnxruntime)."""
    from edge.engine.pacing import parse_hop

    return parse_hop(text)


def parse_level(text: str) -> tuple[str, float]:
    """'dehumidifier_on=0.8' -> ('dehumidifier_on', 0.8); whether the bundle has that appliance is
    checked against its labels when the detector opens."""
    key, _, value = text.partition("=")
    try:
        probability = float(value)
    except ValueError:
        probability = float("nan")
    if not key.strip() or not 0 <= probability <= 1:
        raise ValueError(f"{text!r}: expected KEY=P with P in [0, 1], e.g. t_dehumidifier=0.6 or dehumidifier_on=0.8")
    return key.strip(), probability

HOP = TextRule("hop", hop_rule, accepts=(str, int, float))

LEVEL = TextRule("level", parse_level)

SECONDS = Range(0, int(MAX_SPAN_SEC), min_open=True)  # the decision spans: edge.core.decision.DecisionConfig's bounds


@dataclasses.dataclass(frozen=True)
class DetectorSettings:
    """What decides: the bundle, the model, the hop, and overrides of the bundle's decision settings."""

    bundle: Path | None = setting(None, "Bundle directory (from humwatch export).",
                                  PathText(path_type=Path, file_okay=False))
    precision: str | None = setting(None, "fp32 or int8 (BEATs), or student (distilled) [default: the bundle's]",
                                    click.Choice(PRECISIONS))
    threads: int | None = setting(None, "onnxruntime intra-op threads [default: all cores]", click.IntRange(1, 1024))
    hop: str = setting("auto", "Seconds between decisions, or auto: the shortest hop that fits --cpu-budget.",
                       HOP, metavar="SECONDS|auto", show_default=True)
    cpu_budget: float = setting(0.5, "With --hop auto: the share of all cores inference may use.",
                                Range(0, 1, min_open=True), show_default=True)
    signal_floor_dbfs: float = setting(SIGNAL_FLOOR_DBFS, "Windows quieter than this (RMS about the mean, in dBFS) are "
                                       "not decided: the line says no-signal (digital silence, a dead microphone).",
                                       Range(SILENT_DBFS, 0), show_default=True)
    median_sec: float | None = setting(None, "Seconds of windows in the running median [bundle]", SECONDS)
    debounce_sec: float | None = setting(None, "Seconds a new state must hold before it is reported [bundle]", SECONDS)
    t_ac: float | None = setting(None, "File threshold for the AC [bundle]", PROBABILITY)
    t_fridge: float | None = setting(None, "File threshold for the fridge [bundle]", PROBABILITY)
    ac_on: float | None = setting(None, "AC hysteresis: on at [bundle]", PROBABILITY)
    ac_off: float | None = setting(None, "AC hysteresis: off below [bundle]", PROBABILITY)
    fridge_on: float | None = setting(None, "Fridge hysteresis: on at [bundle]", PROBABILITY)
    fridge_off: float | None = setting(None, "Fridge hysteresis: off below [bundle]", PROBABILITY)
    level: tuple[str, ...] = setting((), "Any appliance's file threshold or hysteresis, e.g. t_dehumidifier=0.6, "
                                     "dehumidifier_on=0.8 (repeat for more) [bundle]", LEVEL, multiple=True,
                                     metavar="KEY=P")

    def decision_overrides(self) -> DecisionOverrides:
        """The decision settings given here (the rest come from the bundle)."""
        flat = {name: getattr(self, name) for name in ("t_ac", "t_fridge", "ac_on", "ac_off", "fridge_on", "fridge_off")
                if getattr(self, name) is not None}
        levels: dict[str, dict[str, float]] = {}
        for key, value in [*flat.items(), *(parse_level(text) for text in self.level)]:
            appliance, side = level_of(key)
            levels.setdefault(appliance, {})[side] = value
        return DecisionOverrides(levels, self.median_sec, self.debounce_sec)


def level_of(key: str) -> tuple[str, str]:
    """A flat key -> (appliance, side): t_NAME the threshold, NAME_on and NAME_off the hysteresis."""
    if key.startswith("t_"):
        return key[2:], "threshold"
    name, _, side = key.rpartition("_")
    if not name or side not in ("on", "off"):
        raise ValueError(f"{key!r}: expected t_NAME, NAME_on or NAME_off")
    return name, side


def require_bundle(settings: DetectorSettings) -> None:
    if settings.bundle is None:
        raise SettingsError("no bundle: pass --bundle DIR or set bundle = \"DIR\" in the --config file")
