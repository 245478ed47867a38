"""A controller process for bench/fleet.py that counts its SQL statements.

The count is the bench's instrument, not the controller's: a SQLAlchemy
``before_cursor_execute`` listener on every Engine of this process, keyed
by the route of the request it serves (an ASGI wrapper puts the route in a
context variable, which the worker threads and the long-poll batch tasks
inherit; none: a background task such as the periodic re-check), written
as JSON to ``$FLEET_QUERIES_FILE`` on SIGUSR1.  Everything else is
``edgectl controller`` as deployed (settings from the ``EDGECTL_CONTROLLER_*``
environment).
"""

from __future__ import annotations

import contextvars
import json
import os
import signal
import sys
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from edgectl.controller import server
from edgectl.controller.settings import load

ROUTE: contextvars.ContextVar[str] = contextvars.ContextVar("route", default="background")


def route(path: str, method: str) -> str:
    if path.endswith("/desired-state"):
        return "desired"
    if path.endswith("/status"):
        return "status"
    if path == "/v1/quarantines" and method == "POST":
        return "write"
    if path == "/metrics":
        return "metrics"  # the bench's own "are they parked?" scrapes
    return "other"


def counted(app: Any) -> Any:
    """``app`` with each request's route in ``ROUTE`` while it runs."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            ROUTE.set(route(scope["path"], scope["method"]))
        await app(scope, receive, send)

    return wrapped


def main() -> int:
    counts: Counter[str] = Counter()
    target = Path(os.environ["FLEET_QUERIES_FILE"])

    def count(*_: Any) -> None:
        counts[ROUTE.get()] += 1

    sa.event.listen(Engine, "before_cursor_execute", count)

    def dump(_signum: int, _frame: FrameType | None) -> None:
        temporary = target.with_suffix(".tmp")
        temporary.write_text(json.dumps(dict(counts)))
        temporary.replace(target)

    signal.signal(signal.SIGUSR1, dump)
    make = server.create_app
    server.create_app = lambda *a, **k: counted(make(*a, **k))  # type: ignore[assignment]
    server.serve(load(None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
