"""The offenders report's protocol: what an agent may send and a controller takes.

Both sides read these (the controller to validate a status report's
``offenders`` section, the agent to stay inside it), so that a limit moved
on one side cannot silently make every report of the other a 422.
"""

from __future__ import annotations

from typing import Literal, get_args

# Which block rule logged: the kind word of the rule's log prefix.
OffenderKind = Literal["ratelimit", "concurrency", "destinationlimit", "op25b", "quarantine"]
KINDS: tuple[str, ...] = get_args(OffenderKind)

# Characters of ``reason`` (why the offenders list is unavailable).
REASON_MAX = 500
# Entries in one report: the agent keeps more, and sends the highest counts.
MAX_REPORTED = 1_000
# Seconds of ``window_seconds``: an entry outlives its last event by at most a day.
WINDOW_MAX = 86_400
