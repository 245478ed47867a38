"""Writers in two "processes" (two stores, two engines) while an agent follows
deltas: sequence order must be commit order, so the agent misses nothing."""

from __future__ import annotations

import json
import threading

from ctl_support import Api, World

from edgectl.controller.store import Store, desired, gateways, holds
from edgectl.controller.store.subscribers import Binding, bind_many
from edgectl.model import Prefix, QuarantineMode, state_from_data
from edgectl.model.delta import patch
from edgectl.model.serial import delta_from_data

WRITERS = 4
EACH = 12


def test_an_agent_following_deltas_converges_under_concurrent_writers(
    api: Api, world: World
) -> None:
    store = api.store
    bindings = [Binding(f"c{i}", Prefix.parse(f"100.64.3.{i + 1}")) for i in range(WRITERS * EACH)]
    bind_many(store, "setup", bindings)
    gateway = gateways.gateway_id(store, "gw-a")
    first = json.loads(desired.serve(store, gateway, None).body)
    state = state_from_data(first["state"])
    others = [Store.open(store.database.url, migrate=False) for _ in range(2)]
    done = threading.Event()
    errors: list[BaseException] = []

    def writer(index: int) -> None:
        try:
            target = others[index % 2]
            for n in range(EACH):
                account = f"c{index * EACH + n}"
                mode = QuarantineMode.SMTP if n % 2 else QuarantineMode.BLOCK
                hold, _ = holds.quarantine(
                    target, "w", holds.QuarantineSpec(mode, "r", account=account)
                )
                if n % 3 == 0:
                    holds.lift(target, "w", "quarantine", hold["id"], "done")
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)]
    for thread in threads:
        thread.start()
    # The agent: follow deltas from its cursor while the writers run.
    while not done.is_set():
        if not any(thread.is_alive() for thread in threads):
            done.set()
        answer = json.loads(desired.serve(store, gateway, state.revision).body)
        if answer["kind"] == "delta":
            state = patch(state, delta_from_data(answer["delta"]))
        else:
            state = state_from_data(answer["state"])
    for other in others:
        other.close()
    assert not errors, errors
    final = json.loads(desired.serve(store, gateway, None).body)
    assert state == state_from_data(final["state"])
    expected = {
        f"100.64.3.{index * EACH + n + 1}"
        for index in range(WRITERS)
        for n in range(EACH)
        if n % 3 != 0
    }
    assert {str(key) for key in state.quarantines} == expected
