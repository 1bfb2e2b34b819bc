"""Output for operators: aligned text tables, or JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

NONE = "-"  # a None cell in a table


def render(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    *,
    as_json: bool,
    out: TextIO | None = None,
) -> None:
    """Print ``rows`` as a table with ``columns`` (upper-cased headers) or as a JSON list
    to ``out`` (default: the current ``sys.stdout``). A value None (no such thing:
    null in JSON) shows as "-" in the table."""
    out = out or sys.stdout
    if as_json:
        json.dump(list(rows), out, indent=2, default=str)
        out.write("\n")
        return
    cells = [[_cell(row.get(c, "")) for c in columns] for row in rows]
    headers = [c.upper() for c in columns]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    for line in [headers, *cells]:
        out.write(
            "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() + "\n"
        )


def _cell(value: Any) -> str:
    return NONE if value is None else str(value)
