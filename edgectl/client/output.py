"""Human tables by default, the API's own JSON with ``-o json``.

Tables are plain columns padded to the widest cell (no colours, no
box-drawing), so they survive a pipe into ``grep`` or an email.
"""

from __future__ import annotations

import json
import operator
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

Column = tuple[str, Callable[[dict[str, Any]], Any]]


def columns(*titled_fields: tuple[str, str]) -> list[Column]:
    """Columns that each show one field of the row: ``("ID", "id"), ...``."""
    return [(title, operator.itemgetter(name)) for title, name in titled_fields]


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, list):
        return ",".join(cell(v) for v in value) or "-"
    text = str(value)
    # Reasons may span lines; a table row may not.
    return text.replace("\n", " ").replace("\t", " ")


def table(rows: Sequence[dict[str, Any]], columns: Sequence[Column], out: TextIO) -> None:
    header = [name for name, _ in columns]
    body = [[cell(get(row)) for _, get in columns] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]
    for line in [header, *body]:
        out.write("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
        out.write("\n")


def pairs(items: Sequence[tuple[str, Any]], out: TextIO) -> None:
    width = max(len(k) for k, _ in items)
    for key, value in items:
        out.write(f"{key.ljust(width)}  {cell(value)}\n")


def emit_json(document: Any, out: TextIO | None = None) -> None:
    stream = out or sys.stdout
    json.dump(document, stream, indent=2, sort_keys=False)
    stream.write("\n")
