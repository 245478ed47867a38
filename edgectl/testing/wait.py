"""Waiting for a condition, with a deadline: the one poll loop of every tier.

Tests, the lab and the benchmarks use this instead of sleeping: it returns as
soon as the condition holds and bounds the wait when it never does.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class WaitTimeout(AssertionError):
    """A named wait that ran out (an AssertionError: in a test it is a failure)."""


def wait_until(
    condition: Callable[[], object],
    timeout: float = 2.0,
    interval: float = 0.02,
    *,
    what: str | None = None,
) -> bool:
    """Poll ``condition`` every ``interval`` s until it is true or ``timeout`` s pass.

    Returns whether it held; with ``what``, a wait that runs out raises
    ``WaitTimeout`` naming it instead of returning False.
    """
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            if what is not None:
                raise WaitTimeout(f"not within {timeout:g} s: {what}")
            return False
        time.sleep(interval)
