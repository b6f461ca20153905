"""The engine's options (batch, stream, and every monitor): what decides, as one record
(edge.core.options makes its command-line options and reads it from a settings file)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import click

from edge.core.bundle import PRECISIONS
from edge.core.decision import LEVEL_SIDES, MAX_SPAN_SEC, DecisionOverrides, flat_key
from edge.core.hearing import SIGNAL_FLOOR_DBFS, SILENT_DBFS
from edge.core.labels import SEED
from edge.core.options import PROBABILITY, PathText, Range, SettingsError, Table, TextRule, setting


def hop_rule(text: str) -> float | None:
    """Seconds between decisions, or "auto": edge.engine.pacing.parse_hop, imported only when an option
    is checked (pacing loads onnxruntime)."""
    from edge.engine.pacing import parse_hop

    return parse_hop(text)


def level_of(key: str) -> tuple[str, str]:
    """A level's flat key (earlier files and --level t_NAME=P) -> (appliance, side): t_NAME the threshold,
    NAME_on and NAME_off the hysteresis."""
    if key.startswith("t_"):
        return key[2:], "threshold"
    name, _, side = key.rpartition("_")
    if not name or side not in ("on", "off"):
        raise ValueError(f"{key!r}: expected t_NAME, NAME_on or NAME_off")
    return name, side


HOP = TextRule("hop", hop_rule, accepts=(str, int, float))

LEVELS = Table(LEVEL_SIDES, PROBABILITY, "APPLIANCE.SIDE=P", "fridge.on=0.8", old=level_of,
               aliases={flat_key(name, side): (name, side) for name in SEED.names for side in LEVEL_SIDES})

HOP_ONLY = ("median_sec", "debounce_sec", *(alias for alias, (_, side) in LEVELS.aliases.items() if side != "threshold"))
"""The settings that change only decisions hop by hop (stream, live), not a file decided whole (batch)."""

SECONDS = Range(0, int(MAX_SPAN_SEC), min_open=True)  # the decision spans: edge.core.decision.DecisionConfig's bounds


# The student's audit by its teacher: one window every 5 minutes of audio keeps an audited student
# under 2 % of a core with the teacher in a child process (docs/performance.md, "A whole live monitor")
# and still gives 12 audits an hour, above the 5 an hourly verdict needs.
AUDIT_EVERY_SEC = 300.0


@dataclasses.dataclass(frozen=True)
class DetectorSettings:
    """What decides: the bundle, the model, the hop, and overrides of the bundle's decision settings."""

    bundle: Path | None = setting(None, "Bundle directory (from humwatch export).",
                                  PathText(path_type=Path, file_okay=False), addon=True)
    precision: str | None = setting(None, "fp32 or int8 (BEATs), or student (distilled) [default: the bundle's]",
                                    click.Choice(PRECISIONS), addon=True)
    threads: int | None = setting(None, "onnxruntime intra-op threads [default: all cores]", click.IntRange(1, 1024))
    hop: str = setting("auto", "Seconds between decisions, or auto: the shortest hop that fits --cpu-budget.",
                       HOP, metavar="SECONDS|auto", show_default=True, addon=True)
    cpu_budget: float = setting(0.5, "With --hop auto: the share of all cores inference may use.",
                                Range(0, 1, min_open=True), show_default=True, addon=True)
    signal_floor_dbfs: float = setting(SIGNAL_FLOOR_DBFS, "Windows with a second quieter than this (RMS about the mean, in "
                                       "dBFS) are not decided: the line says no-signal (digital silence, a dead microphone).",
                                       Range(SILENT_DBFS, 0), show_default=True)
    median_sec: float | None = setting(None, "Seconds of windows in the running median [bundle]", SECONDS)
    debounce_sec: float | None = setting(None, "Seconds a new state must hold before it is reported [bundle]", SECONDS)
    levels: Mapping[str, Mapping[str, float]] = setting(
        None, "An appliance's file threshold, or its hysteresis on/off (stream and live), e.g. fridge.on=0.8, dehumidifier.threshold=0.6 (repeat "
              "for more) [bundle]", LEVELS, multiple=True, flag="level", metavar="APPLIANCE.SIDE=P")

    def decision_overrides(self) -> DecisionOverrides:
        """The decision settings given here (the rest come from the bundle)."""
        return DecisionOverrides(self.levels, self.median_sec, self.debounce_sec)


def require_bundle(settings: DetectorSettings) -> None:
    if settings.bundle is None:
        raise SettingsError("no bundle: pass --bundle DIR or set bundle = \"DIR\" in the --config file")
