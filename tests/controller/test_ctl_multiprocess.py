"""A change made through another store (another controller process) still
ends a long-poll, through the periodic revision re-check."""

from __future__ import annotations

import threading
import time
from typing import Any

from ctl_support import Api, World, wait_until_parked

from edgectl.controller.store import Store, holds
from edgectl.controller.store.catalog import create_pool, put_relay
from edgectl.model import Pool, PoolKind, Prefix, QuarantineMode, Relay


def test_long_poll_sees_a_change_from_another_process(api: Api, world: World) -> None:
    api.put("/v1/accounts/alice/session", {"ipv4": "100.64.0.10"})
    revision = api.get("/v1/gateways/gw-a")["revision"]
    result: dict[str, Any] = {}

    def poll() -> None:
        result["doc"] = api.get(
            "/v1/gateways/gw-a/desired-state", params={"since": revision, "wait": 20}
        )

    waiter = threading.Thread(target=poll)
    waiter.start()
    wait_until_parked(api)
    other = Store.open(api.store.database.url, migrate=False)  # no listener: no notification
    try:
        spec = holds.QuarantineSpec(mode=QuarantineMode.SMTP, reason="r", account="alice")
        holds.quarantine(other, "token:elsewhere", spec)
    finally:
        other.close()
    started = time.monotonic()
    waiter.join(timeout=10)
    assert not waiter.is_alive()
    assert time.monotonic() - started < 5
    assert result["doc"]["delta"]["quarantines"]["upserts"][0]["key"] == "100.64.0.10"


def test_catalogue_cache_follows_changes_from_another_process(api: Api, world: World) -> None:
    hold = {"prefix": "100.64.0.9", "mode": "smtp", "reason": "r"}
    api.call("POST", "/v1/quarantines", role="abuse", json=hold, expect=201)  # caches the view
    other = Store.open(api.store.database.url, migrate=False)
    try:
        # Another controller process adds a static pool with a relay in it.
        create_pool(
            other, "token:elsewhere", Pool("p9", PoolKind.STATIC, (Prefix.parse("10.9.0.0/16"),))
        )
        put_relay(other, "token:elsewhere", Relay("mx8", (Prefix.parse("10.9.0.25"),)), create=True)
    finally:
        other.close()
    body = {"prefix": "10.9.0.25", "mode": "smtp", "reason": "r"}
    response = api.call("POST", "/v1/quarantines", role="abuse", json=body, expect=422)
    assert "relays[mx8]" in response.text
