"""Exponential backoff with jitter, for retrying a controller that is down or failing.

Jitter keeps a fleet of agents that lost the controller together from
coming back in lock-step and knocking it over again; the floor at half the
step keeps one agent from hammering it.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    def __init__(self, low: float, high: float, rng: Callable[[], float] = random.random) -> None:
        self.low = low
        self.high = high
        self._rng = rng
        self.failures = 0

    def next_delay(self) -> float:
        """The wait before the next attempt after one more failure."""
        step = min(self.high, self.low * 2.0 ** min(self.failures, 60))
        self.failures += 1
        return step / 2 + self._rng() * step / 2

    def reset(self) -> None:
        self.failures = 0
