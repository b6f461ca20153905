"""Alarms on how long an appliance runs or rests: ``--alarm fridge-run-max=90m``, ``fridge-off-max=6h``.

An alarm is raised when the current run (or pause) has been observed for longer than its limit,
and cleared when the appliance changes state. The current run comes from the history, so an
alarm survives a restart (time the monitor was not running is not counted).
"""

from __future__ import annotations

import dataclasses
import re
import time

from edge.core.defaults import LABELS

_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")
_RULE = re.compile(rf"^({'|'.join(LABELS)})-(run|off)-max=(.+)$")


def parse_duration(text: str) -> float:
    """'90m', '6h', '1h30m', '45s' -> seconds."""
    match = _DURATION.match(text.strip())
    if not text.strip() or match is None or not any(match.groups()):
        raise ValueError(f"{text!r}: expected a duration such as 90m, 6h, 1h30m or 45s")
    hours, minutes, seconds = (float(group or 0) for group in match.groups())
    return hours * 3600 + minutes * 60 + seconds


@dataclasses.dataclass(frozen=True)
class AlarmRule:
    appliance: str
    running: bool  # True: a run longer than the limit; False: a pause longer than the limit
    limit_sec: float

    @property
    def name(self) -> str:
        return f"{self.appliance}-{'run' if self.running else 'off'}-max"

    @classmethod
    def parse(cls, text: str) -> AlarmRule:
        match = _RULE.match(text.strip())
        if match is None:
            raise ValueError(f"--alarm {text!r}: expected APPLIANCE-(run|off)-max=DURATION with APPLIANCE one of "
                             f"{', '.join(LABELS)}, e.g. fridge-run-max=90m or fridge-off-max=6h")
        try:
            limit = parse_duration(match.group(3))
        except ValueError as error:
            raise ValueError(f"--alarm {text!r}: {error}") from error
        return cls(match.group(1), match.group(2) == "run", limit)


class Alarms:
    """The state of each alarm rule; :meth:`update` returns the raise / clear events."""

    def __init__(self, rules: list[AlarmRule], clock=time.time) -> None:
        names = [rule.name for rule in rules]
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise ValueError(f"--alarm {', '.join(duplicated)} given twice; keep one limit for each")
        self.rules, self.clock = rules, clock
        self.active: dict[str, bool] = {rule.name: False for rule in rules}

    def update(self, current: dict[str, tuple[bool | None, float]]) -> list[dict]:
        """current: appliance -> (running, seconds in that state)."""
        events = []
        for rule in self.rules:
            running, seconds = current[rule.appliance]
            raised = running is rule.running and seconds > rule.limit_sec
            if raised != self.active[rule.name]:
                self.active[rule.name] = raised
                events.append({
                    "event": "alarm", "alarm": rule.name, "state": "raised" if raised else "cleared",
                    "appliance": rule.appliance, "limit_sec": rule.limit_sec, "observed_sec": round(seconds, 1),
                    "time": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.clock())),
                })
        return events
