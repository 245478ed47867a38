"""Retire a gateway: remove ``table inet edgectl`` and the persisted state.

The one way the agent's rules leave a kernel.  The state files (snapshot
and journal) go too, so a later agent start cannot bring the old rules back
from disk.
"""

from __future__ import annotations

import logging

from edgectl.agent.daemon.config import AgentConfig
from edgectl.agent.daemon.kernel import Kernel
from edgectl.agent.persist import StateStore
from edgectl.agent.table import SPEC

log = logging.getLogger("edgectl.agent")


def decommission(config: AgentConfig) -> list[str]:
    """What was removed, in words (empty: nothing was there)."""
    done: list[str] = []
    kernel = Kernel(config.netns)
    try:
        if kernel.remove():
            done.append(f"deleted table {SPEC}")
    finally:
        kernel.close()
    done += [f"removed {path}" for path in StateStore(config.state_dir).remove()]
    return done
