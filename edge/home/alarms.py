"""Alarms on how long an appliance runs or rests: ``--alarm fridge-run-max=90m``, ``fridge-off-max=6h``,
``dehumidifier-run-max=3h`` (any appliance of the bundle: the names are checked when the monitor opens it).

An alarm is raised when the current run (or pause) has been observed for longer than its limit,
and cleared when that run ends; the cleared event carries how long the run it ended was observed.
The current run is read from the history's latest segment, so after a restart it starts afresh:
time the monitor was not running is never counted, and an alarm raised before the restart is
raised again only once the new run passes the limit.
"""

from __future__ import annotations

import dataclasses
import re
import time

from edge.core.labels import check_appliance

_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")
_RULE = re.compile(r"^(.+)-(run|off)-max=(.+)$")
SYNTAX = "APPLIANCE-(run|off)-max=DURATION, e.g. fridge-run-max=90m or fridge-off-max=6h"


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
        """The rule's syntax; whether the bundle hears its appliance is checked when the monitor opens."""
        match = _RULE.match(text.strip())
        if match is None:
            raise ValueError(f"--alarm {text!r}: expected {SYNTAX}")
        appliance, kind, limit = match.groups()
        try:
            return cls(check_appliance(appliance), kind == "run", parse_duration(limit))
        except ValueError as error:
            raise ValueError(f"--alarm {text!r}: {error}") from error


class Alarms:
    """The state of each alarm rule; :meth:`update` returns the raise / clear events."""

    def __init__(self, rules: list[AlarmRule], clock=time.time) -> None:
        names = [rule.name for rule in rules]
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise ValueError(f"--alarm {', '.join(duplicated)} given twice; keep one limit for each")
        self.rules, self.clock = rules, clock
        self.active: dict[str, bool] = {rule.name: False for rule in rules}
        self.observed: dict[str, float] = {rule.name: 0.0 for rule in rules}  # the rule's current run so far

    def update(self, current: dict[str, tuple[bool | None, float]]) -> list[dict]:
        """current: appliance -> (running, seconds in that state); one not there is undecided. Each
        event's `observed_sec` is the run's length: so far when raised, and when cleared the length of
        the run it ended (as of its last decision: the change fell between that decision and this one)."""
        events = []
        for rule in self.rules:
            running, seconds = current.get(rule.appliance, (None, 0.0))
            in_run = running is rule.running
            raised = in_run and seconds > rule.limit_sec
            ended, self.observed[rule.name] = self.observed[rule.name], seconds if in_run else 0.0
            if raised != self.active[rule.name]:
                self.active[rule.name] = raised
                events.append({
                    "event": "alarm", "alarm": rule.name, "state": "raised" if raised else "cleared",
                    "appliance": rule.appliance, "limit_sec": rule.limit_sec,
                    "observed_sec": round(seconds if raised else ended, 1),
                    "time": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.clock())),
                })
        return events
