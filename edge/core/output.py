"""Output for machines (JSON lines, flushed) and for people (aligned tables)."""

from __future__ import annotations

import json
import sys
from typing import IO, Iterable, Sequence


def _rounded(value):
    return round(value, 4) if isinstance(value, float) else value


def json_line(record: dict, stream: IO[str] | None = None) -> None:
    """Write one JSON object as one line and flush it."""
    stream = stream or sys.stdout
    stream.write(json.dumps({k: _rounded(v) for k, v in record.items()}) + "\n")
    stream.flush()


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def format_table(rows: Iterable[dict], columns: Sequence[str]) -> str:
    """A plain aligned text table of the given columns."""
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [max([len(column), *(len(r[i]) for r in cells)]) for i, column in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)
