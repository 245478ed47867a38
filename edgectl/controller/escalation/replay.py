"""Replay: a ladder over a past period's evidence, acting on nothing.

The simulation is this module's pure ``simulate``; ``store/replay.py``
feeds it the stored reports and offender episodes in time order.  It plays
the policy as if enforced: every step's hold is simulated for its duration
(hits meanwhile are absorbed, as the engine absorbs them), and a strike the
brakes or an exemption would have stopped is counted as such, then held as
if an analyst had approved it - the upper bound of what the policy does.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from edgectl.controller.escalation import ladder

ACCOUNTS_SHOWN = 100  # accounts listed per step; the counts are complete


class Event(NamedTuple):
    """A tuple, not a frozen dataclass: a month of them is built per replay, and a
    frozen dataclass's __init__ cost a third of the replay's time."""

    at: datetime
    account: str
    rule: ladder.Rule
    events: int = 1  # offender events (a report is one)
    pool: str | None = None


@dataclass
class _Account:
    strikes: list[datetime] = field(default_factory=list)
    held_until: datetime | None = None
    held_forever: bool = False
    pending: dict[ladder.Rule, tuple[int, datetime]] = field(default_factory=dict)

    def held(self, at: datetime) -> bool:
        return self.held_forever or (self.held_until is not None and at < self.held_until)


def simulate(
    policy: ladder.Ladder,
    events: Iterable[Event],
    caps: ladder.Caps,
    exempt: frozenset[str] = frozenset(),
    within: int = 900,
) -> dict[str, Any]:
    """What ``policy`` would have done over ``events`` (in time order)."""
    accounts: dict[str, _Account] = defaultdict(_Account)
    admitted: list[tuple[datetime, str | None]] = []
    per_step: list[set[str]] = [set() for _ in policy.steps]
    counts = [0] * len(policy.steps)
    outcomes: dict[str, int] = defaultdict(int)
    seen = absorbed = 0
    for event in events:
        seen += 1
        state = accounts[event.account]
        if state.held(event.at):
            absorbed += 1
            state.pending.pop(event.rule, None)
            continue
        if event.rule.source == "offender":
            count, since = state.pending.get(event.rule, (0, event.at))
            if event.at - since > timedelta(seconds=within):
                count, since = 0, event.at  # the earlier events are outside the window
            count += event.events
            if count < event.rule.threshold:
                state.pending[event.rule] = (count, since)
                continue
            state.pending.pop(event.rule, None)
        number = ladder.strike_number(state.strikes, event.at, policy.window)
        index, step = ladder.step_for(policy, number)
        state.strikes.append(event.at)
        if event.account in exempt:
            outcomes["exempt"] += 1
        elif ladder.admit(_recent(admitted, event.at), event.at, event.pool, caps):
            admitted.append((event.at, event.pool))
            outcomes["enforced"] += 1
        else:
            outcomes["braked"] += 1
        counts[index] += 1
        per_step[index].add(event.account)
        until = ladder.hold_expiry(step, event.at)
        state.held_forever = until is None
        state.held_until = until
    return {
        "events": seen,
        "strikes": sum(counts),
        "absorbed": absorbed,
        "outcomes": dict(outcomes),
        "accounts": sum(1 for a in accounts.values() if a.strikes),
        "steps": [
            {
                "step": index,
                "strike": step.strike,
                "mode": step.mode.value,
                "duration": step.duration,
                "review": step.review,
                "count": counts[index],
                "accounts": sorted(per_step[index])[:ACCOUNTS_SHOWN],
                "account_count": len(per_step[index]),
            }
            for index, step in enumerate(policy.steps)
        ],
    }


def _recent(
    admitted: list[tuple[datetime, str | None]], at: datetime
) -> list[tuple[datetime, str | None]]:
    """The admitted actions that can share an hour with ``at`` (they come in time
    order, so only the tail): keeps a month's replay linear, not quadratic."""
    start = len(admitted)
    while start > 0 and admitted[start - 1][0] > at - ladder.HOUR:
        start -= 1
    return admitted[start:]
