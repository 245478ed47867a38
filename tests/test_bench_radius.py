"""bench/radius_feed.py's own checks: a reply acknowledges only the packet it
answers, and "nothing acknowledged is lost" looks at every acknowledged account.

The NAS senders and the check run against the real feed (``RadiusServer`` with
the store behind it, in this process, on loopback); the benchmark itself runs
the controller as a process of its own.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from edgectl.controller.radius import codec
from edgectl.controller.radius import config as radius_config
from edgectl.controller.radius.events import USER_NAME
from edgectl.controller.radius.server import RadiusServer, bind
from edgectl.controller.radius.wiring import feed_of
from edgectl.controller.store import Store

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _load(name: str) -> ModuleType:
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


radius_feed = _load("radius_feed")
controller_common = sys.modules["controller_common"]


@pytest.fixture
def fed(tmp_path: Path) -> Iterator[tuple[str, list[Any]]]:
    """Three NAS on 127.0.1.1-3 that sent 300 Starts through the real feed and store."""
    url = f"sqlite:///{tmp_path / 'controller.db'}"
    store = Store.open(url)
    controller_common.seed_world(store)
    clients = tmp_path / "clients.toml"
    clients.write_text(
        "".join(
            f'[[client]]\nname = "nas-{n}"\naddress = "127.0.1.{n + 1}"\n'
            f'secret = "{radius_feed.SECRET}"\n'
            for n in range(3)
        )
    )
    clients.chmod(0o600)
    parsed = radius_config.parse({"listen": "127.0.0.1:1813", "clients": str(clients)})
    assert parsed is not None
    settings = dataclasses.replace(parsed, listen=(("127.0.0.1", 0),))  # any free port
    server = RadiusServer(settings, feed_of(store), bind(settings.listen))
    server.start()
    try:
        port = server.addresses[0][1]
        senders = radius_feed._senders(port, 3, 300, codec.dictionary())
        radius_feed._drive(senders, 64, 3.0, time.monotonic() + 30)
    finally:
        server.stop()
        store.close()
    try:
        yield url, senders
    finally:
        for nas in senders:
            nas.sock.close()


def test_every_acknowledged_start_is_found(fed: tuple[str, list[Any]]) -> None:
    url, senders = fed
    assert sum(len(nas.acked) for nas in senders) == 300
    assert radius_feed._verify(url, senders) == 0


def test_an_acknowledgement_without_its_binding_is_counted_lost(
    fed: tuple[str, list[Any]],
) -> None:
    url, senders = fed
    # As if a reply had acknowledged a packet the store never saw (beyond the last share).
    senders[-1].acked.append(len(senders[-1].packets))
    assert radius_feed._verify(url, senders) == 1


def test_a_reply_acknowledges_only_the_packet_it_answers() -> None:
    words = codec.dictionary()
    secret = radius_feed.SECRET.encode()
    first = radius_feed._packets(words, 0, 1)[0]
    again = radius_feed._packets(words, 256, 1)[0]  # same Identifier (0), another packet
    assert first[1] == again[1]
    decoded = codec.decode(first, secret, USER_NAME, words)
    assert radius_feed._answers(decoded.reply, first)
    assert not radius_feed._answers(decoded.reply, again)
    assert not radius_feed._answers(decoded.reply[:-1] + b"\0", first)  # tampered
