"""Shared test fixtures: the BEATs golden files in ../shared/fixtures/beats (never skipped)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HUMWATCH_SHARED", REPO.parent / "shared"))
BEATS_FIXTURES = SHARED / "fixtures" / "beats"


@pytest.fixture(scope="session")
def beats_fixtures() -> Path:
    if not (BEATS_FIXTURES / "tiny_beats.pt").is_file():
        raise FileNotFoundError(
            f"BEATs fixtures not found at {BEATS_FIXTURES}: clone next to shared/ or set HUMWATCH_SHARED"
        )
    return BEATS_FIXTURES


@pytest.fixture(scope="session")
def tiny_checkpoint(beats_fixtures: Path) -> Path:
    return beats_fixtures / "tiny_beats.pt"
