"""Whether anything was heard: the states of a hop that decides nothing, and the signal floor.

A hop ends in a decided state (what the model heard) or in one of these, never in the last answer:

- ``no-signal``: the window holds no sound a room makes: digital silence (a muted or dead
  microphone, a camera sending zeros) or a level below the floor;
- ``no-audio``: no audio arrives at all (a stalled pipe, a lost camera or device).

The level of a stretch of audio is its RMS after removing its DC offset (a converter's offset or a
constant A-law "silence" is no sound), in dB full scale; a window's level is that of its quietest
second, so a window is heard only when every second of it carries sound (the first windows after
a silence, mostly zeros, are not decided on the little sound they hold). The quietest 6-s window of the original
recordings (a quiet room at night, every appliance off: the 3-minute recordings the seed was made from)
sits at -60 dBFS, their median at -58 dBFS; one step of 16-bit audio, the finest a USB microphone
or a camera sends, has an RMS of -90 dBFS. The floor sits there: 30 dB below that quiet room, and
nothing quieter than one step of the converter is a room.
"""

from __future__ import annotations

import math

import numpy as np

NO_SIGNAL = "no-signal"
NO_AUDIO = "no-audio"
UNDECIDED = (NO_SIGNAL, NO_AUDIO)
SIGNAL_FLOOR_DBFS = -90.0
SILENT_DBFS = -150.0  # what digital silence (no variation at all) reads as: JSON has no -inf


def level_dbfs(samples: np.ndarray) -> float:
    """The RMS of `samples` about their mean, in dBFS (full scale 1.0), at least SILENT_DBFS."""
    values = np.asarray(samples, dtype=np.float64)
    rms = float(np.sqrt(np.mean(np.square(values - values.mean())))) if values.size else 0.0
    return max(SILENT_DBFS, 20 * math.log10(rms)) if rms > 0 else SILENT_DBFS


def window_level_dbfs(window: np.ndarray, rate: int) -> float:
    """The level of the quietest whole second of `window` (all of it when shorter than two seconds)."""
    seconds = max(1, len(window) // rate)
    return min(level_dbfs(part) for part in np.array_split(np.asarray(window), seconds))


def no_signal_reason(level: float, floor: float) -> str:
    """Why a window was not decided, in words."""
    heard = "digital silence" if level <= SILENT_DBFS else f"a level of {level:.0f} dBFS"
    return f"no signal: the input carries {heard}, below the {floor:g} dBFS floor of any real room"
