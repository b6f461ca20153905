"""Alarms: the cleared event carries the run it ended; after a restart the current run starts afresh."""

from test_history import Clock, line_at

from edge.home.alarms import AlarmRule, Alarms
from edge.home.history import History
from edge.home.household import Household

HOP = 10.0


def _fridge(running: bool | None, seconds: float) -> dict:
    return {"fridge": (running, seconds), "ac": (False, 0.0)}


def test_the_cleared_event_carries_the_length_of_the_run_it_ended():
    alarms = Alarms([AlarmRule.parse("fridge-run-max=60s"), AlarmRule.parse("fridge-off-max=30s")], clock=lambda: 0.0)
    events = []
    for seconds in range(0, 100, 10):  # a run observed for 90 s: raised at 70 s
        events += alarms.update(_fridge(True, seconds))
    events += alarms.update(_fridge(False, 0.0))  # it stops: cleared, carrying the 90 s it ran
    for seconds in range(10, 50, 10):
        events += alarms.update(_fridge(False, seconds))  # a pause: raised at 40 s
    events += alarms.update(_fridge(True, 0.0))
    assert [(e["alarm"], e["state"], e["observed_sec"]) for e in events] == [
        ("fridge-run-max", "raised", 70), ("fridge-run-max", "cleared", 90),
        ("fridge-off-max", "raised", 40), ("fridge-off-max", "cleared", 40)]


def test_a_run_that_ends_with_the_segment_carries_what_was_observed():
    """A new segment (restart, or a gap without audio) restarts the run: the old one is cleared with its length."""
    alarms = Alarms([AlarmRule.parse("fridge-run-max=60s")], clock=lambda: 0.0)
    events = [event for seconds in (50, 70, 80) for event in alarms.update(_fridge(True, seconds))]
    events += alarms.update(_fridge(True, 0.0))
    assert [(e["state"], e["observed_sec"]) for e in events] == [("raised", 70), ("cleared", 80)]


def test_through_the_history_cleared_is_the_run_and_a_restart_starts_afresh(tmp_path):
    """Fridge runs 0:10-0:30 (20 min) with a 15-minute limit; the monitor restarts in the next run."""
    start, path, events = 1_000_000.0, tmp_path / "h.sqlite", []
    clock = Clock(start)

    def household():
        return Household(History(path, clock=clock), Alarms([AlarmRule.parse("fridge-run-max=15m")], clock=clock), {},
                         events.append)

    home = household()
    for step in range(int(65 * 60 / HOP)):  # 0:00-1:05; the second run starts at 1:10
        clock.now = start + step * HOP
        home(line_at(step * HOP))
    home.close()
    home = household()  # a restart at 1:20, in the middle of the 1:10-1:30 run
    for step in range(int(80 * 60 / HOP), int(89 * 60 / HOP)):
        clock.now = start + step * HOP
        home(line_at(step * HOP))
    home.close()
    assert [(e["state"], e["observed_sec"]) for e in events] == [("raised", 15 * 60 + HOP), ("cleared", 20 * 60 - HOP)]
    assert not home.alarms.active["fridge-run-max"], "after the restart only 9 observed minutes count"
