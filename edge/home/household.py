"""The home's view of the monitor: a live-line sink that records the history, keeps the alarms up
to date (raised / cleared events go to `on_event`), and gives MQTT and HTTP one snapshot."""

from __future__ import annotations

import dataclasses
from typing import Callable

from edge.core.defaults import LABELS
from edge.home.alarms import Alarms
from edge.home.history import History
from edge.monitor.hop import HopLine


def parse_watts(text: str | None) -> dict[str, float]:
    """'ac=1200,fridge=150' -> {'ac': 1200.0, 'fridge': 150.0}."""
    watts = {}
    for part in filter(None, (text or "").split(",")):
        name, _, value = part.partition("=")
        try:
            watts[name.strip()] = float(value)
        except ValueError:
            watts[name.strip()] = -1.0
        if name.strip() not in LABELS or watts[name.strip()] <= 0:
            raise ValueError(f"--watts {text!r}: expected APPLIANCE=WATTS pairs such as ac=1200,fridge=150 "
                             f"(appliances: {', '.join(LABELS)}; watts above 0)")
    return watts


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

    def snapshot(self) -> dict:
        """{appliance: statistics, 'alarms': {name: active}} at this moment."""
        stats = self.history.stats(self.watts)
        return {**{a: dataclasses.asdict(s) for a, s in stats.items()}, "alarms": dict(self.alarms.active)}

    def close(self) -> None:
        self.history.close()
