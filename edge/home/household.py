"""The home's view of the monitor: a live-line sink that records the history, keeps the alarms up
to date (raised / cleared events go to `on_event`), and gives MQTT, HTTP and the page one
:class:`HouseholdSnapshot`."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Callable

from edge.core.labels import check_appliance
from edge.engine.hop import HopLine
from edge.home.alarms import Alarms
from edge.home.history import ApplianceStats, History


def parse_watts(text: str | None) -> dict[str, float]:
    """'ac=1200,fridge=150' -> {'ac': 1200.0, 'fridge': 150.0} (the syntax; whether the bundle hears
    each appliance is :func:`check_appliances`' question, asked when the monitor opens it)."""
    watts = {}
    for part in filter(None, (text or "").split(",")):
        name, _, value = (half.strip() for half in part.partition("="))
        try:
            power = float(value) if check_appliance(name) not in watts else 0.0
        except ValueError:
            power = 0.0
        if not 0 < power < math.inf:
            raise ValueError(f"--watts {text!r}: expected APPLIANCE=WATTS pairs such as ac=1200,fridge=150 "
                             "(each appliance once, watts above 0)")
        watts[name] = power
    return watts


def check_appliances(option: str, given: Mapping[str, str], appliances: Sequence[str], whose: str) -> None:
    """Each appliance an option names (`given`: appliance -> the value naming it, e.g. 'oven' ->
    'oven=2000') must be one of `appliances` (`whose`: "the bundle's", ...); else a ValueError
    naming the value, the appliances and the fix."""
    for name, value in given.items():
        if name not in appliances:
            known = ", ".join(appliances) or "none yet"
            fix = f"; use one of them, e.g. {option} {appliances[0]}{value[len(name):]}" if appliances else ""
            raise ValueError(f"{option} {value}: {name} is not one of {whose} appliances ({known}){fix}")


def check_watts(watts: Mapping[str, float], appliances: Sequence[str], whose: str) -> None:
    """:func:`check_appliances` for --watts."""
    check_appliances("--watts", {name: f"{name}={value:g}" for name, value in watts.items()}, appliances, whose)


@dataclasses.dataclass(frozen=True)
class HouseholdSnapshot:
    """Each appliance's statistics (in the bundle's order) and each alarm's state, at one moment."""

    appliances: Mapping[str, ApplianceStats]
    alarms: Mapping[str, bool]

    def to_json(self) -> dict:
        """The page's form: {appliance: statistics, ..., "alarms": {name: raised}} (an appliance may not
        be named "alarms": labels.RESERVED_NAMES)."""
        return {**{name: dataclasses.asdict(stats) for name, stats in self.appliances.items()}, "alarms": dict(self.alarms)}


class Household:
    """History + alarms as one sink; :meth:`snapshot` is what Home Assistant and /metrics show."""

    def __init__(self, history: History, alarms: Alarms, watts: dict[str, float],
                 on_event: Callable[[dict], None]) -> None:
        self.history, self.alarms, self.watts, self.on_event = history, alarms, watts, on_event

    def __call__(self, line: HopLine) -> None:
        """Record the hop; the alarms follow the decided states even when the history cannot be
        written (its HistoryError is raised after them)."""
        try:
            self.history(line)
        finally:
            for event in self.alarms.update(self.history.current()):
                self.on_event(event)

    def snapshot(self) -> HouseholdSnapshot:
        """The statistics and the alarms at this moment."""
        return HouseholdSnapshot(self.history.stats(self.watts), dict(self.alarms.active))

    def close(self) -> None:
        self.history.close()
