"""CSV feeds (Shadowserver and the like): a header line, then one event a row.

Columns are found by name: the address (``address``, ``ip``, ``src_ip``),
the time (``time``, ``timestamp``) and the class (``class``, ``type``,
``tag``), or one class for the whole file given with the request (a
Shadowserver file is one report type; that class then wins over a column).
Optional ``message_id``/``id``.  Other columns are ignored.
"""

from __future__ import annotations

import csv
import io

from edgectl.controller.reports.model import (
    ParseError,
    Report,
    check_class,
    check_id,
    parse_address,
    parse_time,
)

ADDRESS = ("address", "ip", "src_ip", "source_ip")
TIME = ("time", "timestamp", "date")
CLASS = ("class", "type", "tag")
MESSAGE_ID = ("message_id", "id", "report_id")


def _column(header: list[str], names: tuple[str, ...]) -> int | None:
    lowered = [name.strip().lower() for name in header]
    for name in names:
        if name in lowered:
            return lowered.index(name)
    return None


def parse(text: str, default_class: str | None = None) -> list[Report]:
    """Every row, or a ``ParseError`` naming the first bad line (1 = the header)."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise ParseError("line 1", "empty file: expected a header line") from None
    except csv.Error as error:
        raise ParseError("line 1", str(error)) from None
    address = _column(header, ADDRESS)
    when = _column(header, TIME)
    cls_column = _column(header, CLASS)
    ident = _column(header, MESSAGE_ID)
    if address is None:
        raise ParseError("line 1", f"no address column (one of {', '.join(ADDRESS)})")
    if when is None:
        raise ParseError("line 1", f"no time column (one of {', '.join(TIME)})")
    fixed = None if default_class is None else check_class(default_class, "class")
    if cls_column is None and fixed is None:
        raise ParseError("line 1", f"no class column (one of {', '.join(CLASS)}) and no ?class=")
    reports: list[Report] = []
    try:
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) < len(header):
                raise ParseError(f"line {line}", f"{len(row)} fields, the header has {len(header)}")
            # ?class= wins over a column: Shadowserver's "tag" is its own vocabulary.
            if fixed is not None or cls_column is None:
                cls = fixed
            else:
                cls = check_class(row[cls_column], f"line {line}: class")
            assert cls is not None
            ident_where = f"line {line}: message_id"
            message_id = None if ident is None else check_id(row[ident], ident_where)
            reports.append(
                Report(
                    address=parse_address(row[address], f"line {line}: address"),
                    at=parse_time(row[when], f"line {line}: time"),
                    cls=cls,
                    format="csv",
                    message_id=message_id,
                    where=f"line {line}: time",
                )
            )
    except csv.Error as error:
        raise ParseError(f"line {reader.line_num}", str(error)) from None
    return reports
