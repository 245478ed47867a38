"""A policy's ladder as pure functions: what makes a strike, which strike this is,
which step it reaches, and whether the brakes let an automatic action through.

No I/O: the engine, the replay and the property tests all call these.

Durations are fixed per step and capped (``MAX_DURATION``); nothing is
multiplied by a strike count, so no input makes one grow without bound
(fail2ban's ``bantime.increment`` formula reached 6.8e19 s).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from edgectl.controller.reports.model import ACTIONABLE, INFORMATIONAL
from edgectl.model import QuarantineMode
from edgectl.model.offenders import KINDS

Mode = Literal["dry-run", "propose", "enforce"]
MODES: tuple[Mode, ...] = ("dry-run", "propose", "enforce")

MAX_DURATION = 90 * 86_400  # no automatic hold outlives a quarter
MAX_WINDOW = 366 * 86_400
MAX_STEPS = 10
HOUR = timedelta(hours=1)


class SpecError(ValueError):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Rule:
    """What makes a strike: a report of ``cls``, or ``threshold`` offender
    events of ``kind`` (counted afresh after each strike)."""

    source: Literal["report", "offender"]
    cls: str | None = None
    kind: str | None = None
    threshold: int = 1

    def describe(self) -> str:
        if self.source == "report":
            return f"report:{self.cls}"
        return f"offender:{self.kind}>={self.threshold}"


@dataclass(frozen=True, slots=True)
class Step:
    """From strike ``strike`` on (until the next step's): hold in ``mode`` for
    ``duration`` seconds (None: until lifted; only with ``review``)."""

    strike: int
    mode: QuarantineMode
    duration: int | None
    review: bool = False


@dataclass(frozen=True, slots=True)
class Ladder:
    rules: tuple[Rule, ...]
    steps: tuple[Step, ...]
    window: int  # seconds a strike counts towards the next; older ones have decayed

    def matches_report(self, cls: str) -> bool:
        # Informational classes never act, whatever a policy says (checked
        # at creation too; this holds for a class reclassified later).
        if cls in INFORMATIONAL:
            return False
        return any(r.source == "report" and r.cls == cls for r in self.rules)

    def offender_rules(self) -> list[Rule]:
        return [r for r in self.rules if r.source == "offender"]


def _int(data: Mapping[str, Any], name: str, path: str, low: int, high: int) -> int:
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SpecError(f"{path}.{name}", f"expected an integer {low}..{high}")
    return value


def _rule(data: object, path: str) -> Rule:
    if not isinstance(data, Mapping):
        raise SpecError(path, "expected an object")
    source = data.get("source")
    if source == "report":
        cls = data.get("class")
        if cls in INFORMATIONAL:
            raise SpecError(f"{path}.class", f"{cls!r} is informational: it never acts")
        if cls not in ACTIONABLE:
            raise SpecError(f"{path}.class", f"expected one of {', '.join(sorted(ACTIONABLE))}")
        return Rule("report", cls=str(cls))
    if source == "offender":
        kind = data.get("kind")
        if kind not in KINDS or kind == "quarantine":
            # "quarantine" offenders are hits of a hold already in force.
            allowed = ", ".join(k for k in KINDS if k != "quarantine")
            raise SpecError(f"{path}.kind", f"expected one of {allowed}")
        threshold = _int(data, "threshold", path, 1, 10_000_000)
        return Rule("offender", kind=str(kind), threshold=threshold)
    raise SpecError(f"{path}.source", "expected 'report' or 'offender'")


def _step(data: object, path: str) -> Step:
    if not isinstance(data, Mapping):
        raise SpecError(path, "expected an object")
    strike = _int(data, "strike", path, 1, 1000)
    try:
        mode = QuarantineMode(str(data.get("mode")))
    except ValueError:
        modes = ", ".join(m.value for m in QuarantineMode)
        raise SpecError(f"{path}.mode", f"expected one of {modes}") from None
    review = data.get("review", False)
    if not isinstance(review, bool):
        raise SpecError(f"{path}.review", "expected true or false")
    duration = None
    if data.get("duration") is not None:
        duration = _int(data, "duration", path, 60, MAX_DURATION)
    elif not review:
        raise SpecError(f"{path}.duration", "required unless review is true (held until lifted)")
    return Step(strike, mode, duration, review)


def parse(data: object) -> Ladder:
    """A ladder from its JSON/TOML form; ``SpecError`` names the field."""
    if not isinstance(data, Mapping):
        raise SpecError("spec", "expected an object")
    rules_data = data.get("strikes")
    if not isinstance(rules_data, list) or not rules_data:
        raise SpecError("strikes", "expected a non-empty list")
    rules = tuple(_rule(r, f"strikes[{i}]") for i, r in enumerate(rules_data))
    steps_data = data.get("steps")
    if not isinstance(steps_data, list) or not 1 <= len(steps_data) <= MAX_STEPS:
        raise SpecError("steps", f"expected a list of 1..{MAX_STEPS} steps")
    steps = tuple(_step(s, f"steps[{i}]") for i, s in enumerate(steps_data))
    if steps[0].strike != 1:
        raise SpecError("steps[0].strike", "the first step must be strike 1")
    for i in range(1, len(steps)):
        if steps[i].strike <= steps[i - 1].strike:
            raise SpecError(f"steps[{i}].strike", "steps must climb: strictly increasing")
    window = _int(data, "window", "spec", 60, MAX_WINDOW)
    return Ladder(rules, steps, window)


def dump(ladder: Ladder) -> dict[str, Any]:
    rules: list[dict[str, Any]] = []
    for rule in ladder.rules:
        if rule.source == "report":
            rules.append({"source": "report", "class": rule.cls})
        else:
            rules.append({"source": "offender", "kind": rule.kind, "threshold": rule.threshold})
    steps = [
        {"strike": s.strike, "mode": s.mode.value, "duration": s.duration, "review": s.review}
        for s in ladder.steps
    ]
    return {"strikes": rules, "steps": steps, "window": ladder.window}


def strike_number(previous: Iterable[datetime], at: datetime, window: int) -> int:
    """This strike's number: 1 + the strikes before ``at`` that have not decayed
    (less than ``window`` seconds old).  Strikes after ``at`` do not count."""
    horizon = at - timedelta(seconds=window)
    return 1 + sum(1 for t in previous if horizon < t <= at)


def step_for(ladder: Ladder, number: int) -> tuple[int, Step]:
    """The highest step whose ``strike`` is at most ``number`` (the top step
    repeats for strikes past it), and its index."""
    index = bisect.bisect_right([s.strike for s in ladder.steps], number) - 1
    index = max(index, 0)
    return index, ladder.steps[index]


def hold_expiry(step: Step, at: datetime) -> datetime | None:
    if step.duration is None:
        return None
    return at + timedelta(seconds=min(step.duration, MAX_DURATION))


@dataclass(frozen=True, slots=True)
class Caps:
    """Automatic actions per sliding hour: the whole fleet, and each pool."""

    fleet: int
    pool: int


def admit(
    admitted: Sequence[tuple[datetime, str | None]], at: datetime, pool: str | None, caps: Caps
) -> bool:
    """Whether one more automatic action at ``at`` in ``pool`` keeps every
    sliding hour at or under the caps, given the ``admitted`` ones.

    Any order: ``admitted`` may hold actions later than ``at`` (a replay, a
    clock step), so every hour-long window containing ``at`` is checked,
    not only the one ending at it.  A window's count only rises where its
    right edge passes an action, so those starts (and the earliest one) are
    the only ones to check.
    """
    fleet = [t for t, _ in admitted]
    if not _fits(fleet, at, caps.fleet):
        return False
    if pool is None:
        return True
    return _fits([t for t, p in admitted if p == pool], at, caps.pool)


_TICK = timedelta(microseconds=1)


def _fits(times: Sequence[datetime], at: datetime, cap: int) -> bool:
    if cap <= 0:
        return False
    near = sorted(t for t in times if at - HOUR < t < at + HOUR)
    if len(near) < cap:
        return True
    starts = {at - HOUR + _TICK} | {
        t - HOUR + _TICK for t in near if at - HOUR < t - HOUR + _TICK <= at
    }
    for start in starts:
        end = start + HOUR
        low = bisect.bisect_left(near, start)
        high = bisect.bisect_left(near, end)
        if high - low + 1 > cap:
            return False
    return True
