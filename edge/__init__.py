"""humwatch on the edge: is the air conditioner or the fridge running?

The public API (imported lazily, so ``import edge`` stays light)::

    from edge import Detector
    detector = Detector.from_bundle("bundles/kitchen", hop=1.5)
    lines = detector.feed(samples, 48_000)        # HopLine objects, one per hop
    detector.classify_file("recording.m4a")       # one decision for a whole file
"""

from __future__ import annotations

import importlib

_PUBLIC = {
    "Detector": "edge.engine.detector",
    "HopLine": "edge.engine.hop",
    "DecisionConfig": "edge.core.decision",
    "AudioError": "edge.core.audio",
    "BundleError": "edge.core.bundle",
}
__all__ = list(_PUBLIC)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'edge' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)
