"""What deciding a whole file gives: its line in `humwatch batch`, as a record.

A :class:`FileResult` is one file's decision (the median over its windows that carry a signal) or,
when none does, its no-signal reason; a :class:`FileFailure` is a file or folder that could not
be decided, and why. Both write the JSON line batch prints (:meth:`to_json`)."""

from __future__ import annotations

import dataclasses

from edge.core.decision import FileDecision
from edge.core.hearing import NO_SIGNAL


@dataclasses.dataclass(frozen=True)
class FileResult:
    """One file decided: `decision` (None when no window carries a signal: `reason` says so)."""

    path: str
    decision: FileDecision | None
    windows: int  # the windows decided
    duration_sec: float
    no_signal_windows: int = 0  # the windows below the signal floor, left out
    reason: str | None = None

    @property
    def status(self) -> str:
        return self.decision.status if self.decision else NO_SIGNAL

    def to_json(self) -> dict:
        """path, status, p_<name> for each appliance (or the no-signal reason), windows, no_signal_windows
        (when there were), duration_sec."""
        heard = self.decision.fields() if self.decision else {"status": NO_SIGNAL, "reason": self.reason}
        quiet = {"no_signal_windows": self.no_signal_windows} if self.no_signal_windows else {}
        return {"path": self.path, **heard, "windows": self.windows, **quiet, "duration_sec": self.duration_sec}


@dataclasses.dataclass(frozen=True)
class FileFailure:
    """A file (or a folder) that could not be decided; the others still are."""

    path: str
    error: str

    def to_json(self) -> dict:
        return {"path": self.path, "error": self.error}
