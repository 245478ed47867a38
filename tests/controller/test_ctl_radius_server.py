"""The accounting server over real UDP on loopback, with a fake store (unit tier)."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from radius_support import SECRET, FakeFeed, Nas, clients_file

from edgectl.controller.radius import codec
from edgectl.controller.radius import config as radius_config
from edgectl.controller.radius.server import Feed, RadiusServer, bind
from edgectl.testing.wait import wait_until


@pytest.fixture(scope="module")
def words() -> Any:
    return codec.dictionary()


def loopback_settings(path: Path, **extra: object) -> radius_config.RadiusSettings:
    """Settings as parsed, listening on a free loopback port (0 is refused in a file)."""
    settings = radius_config.parse({"listen": "127.0.0.1:1813", "clients": str(path), **extra})
    assert settings is not None
    return dataclasses.replace(settings, listen=(("127.0.0.1", 0),))


def make_server(tmp_path: Path, feed: FakeFeed, **extra: object) -> RadiusServer:
    path = clients_file(tmp_path, ("bng-1", "127.0.0.1", SECRET))
    settings = loopback_settings(path, **extra)
    server = RadiusServer(settings, Feed(feed.apply), bind(settings.listen))
    server.start()
    return server


@pytest.fixture
def feed() -> FakeFeed:
    return FakeFeed()


@pytest.fixture
def server(tmp_path: Path, feed: FakeFeed) -> Iterator[RadiusServer]:
    running = make_server(tmp_path, feed)
    yield running
    feed.gate.set()
    running.stop()


@pytest.fixture
def nas(server: RadiusServer, words: Any) -> Iterator[Nas]:
    client = Nas(server.addresses[0], words)
    yield client
    client.close()


def start(nas: Nas, identifier: int, account: str = "cust-1", address: str = "100.64.0.9") -> bytes:
    return nas.packet(
        identifier,
        Acct_Status_Type="Start",
        Acct_Session_Id=f"s-{account}",
        User_Name=account,
        Framed_IP_Address=address,
    )


def test_answered_only_after_the_commit(server: RadiusServer, nas: Nas, feed: FakeFeed) -> None:
    feed.gate.clear()
    data = start(nas, 1)
    nas.send(data)
    assert feed.entered.wait(5)
    assert nas.answer(0.2) is None  # the commit has not returned: no answer yet
    feed.gate.set()
    reply = nas.answer(5)
    assert reply is not None and codec.is_response_to(reply, data, SECRET.encode())
    assert [(e.kind, e.account, str(e.ipv4)) for e in feed.events] == [
        ("start", "cust-1", "100.64.0.9")
    ]
    assert server.view().packets == {("start", "applied"): 1}


def test_retransmission_is_answered_from_the_cache(
    server: RadiusServer, nas: Nas, feed: FakeFeed
) -> None:
    data = start(nas, 2)
    nas.send(data)
    first = nas.answer(5)
    nas.send(data)
    again = nas.answer(5)
    assert first is not None and first == again
    assert len(feed.events) == 1
    # The worker process counts retransmissions; its counters reach us shortly after.
    assert wait_until(
        lambda: server.view().packets == {("start", "applied"): 1, ("start", "retransmit"): 1},
        5.0,
        0.005,
    )


def test_retransmission_while_committing_is_not_processed_twice(
    server: RadiusServer, nas: Nas, feed: FakeFeed
) -> None:
    feed.gate.clear()
    data = start(nas, 3)
    nas.send(data)
    assert feed.entered.wait(5)
    nas.send(data)
    assert wait_until(
        lambda: server.view().packets.get(("start", "retransmit_in_flight")) == 1, 5.0, 0.005
    )
    feed.gate.set()
    assert nas.answer(5) is not None
    assert len(feed.events) == 1


def test_same_identifier_new_packet_is_processed(
    server: RadiusServer, nas: Nas, feed: FakeFeed
) -> None:
    nas.send(start(nas, 4, "cust-1"))
    assert nas.answer(5) is not None
    nas.send(start(nas, 4, "cust-2"))  # Identifier reused, different authenticator
    assert nas.answer(5) is not None
    assert [e.account for e in feed.events] == ["cust-1", "cust-2"]


def test_dropped_packets_are_counted_and_never_answered(
    server: RadiusServer, nas: Nas, feed: FakeFeed, words: Any
) -> None:
    wrong = Nas(server.addresses[0], words, secret="not-the-secret-0000")
    try:
        wrong.send(start(wrong, 5))
        nas.send(b"\x04\x05\x00")  # truncated
        nas.send(nas.packet(6, Acct_Session_Id="no-status-type", User_Name="a"))
        assert wait_until(lambda: sum(server.view().dropped.values()) == 3, 5.0, 0.005)
        assert wrong.answer(0.1) is None and nas.answer(0.1) is None
        assert server.view().dropped == {"bad_authenticator": 1, "malformed": 2}
        assert feed.events == []
    finally:
        wrong.close()


def test_unknown_nas_is_dropped(tmp_path: Path, feed: FakeFeed, words: Any) -> None:
    path = clients_file(tmp_path, ("bng-far", "192.0.2.0/24", SECRET))
    settings = loopback_settings(path)
    running = RadiusServer(settings, Feed(feed.apply), bind(settings.listen))
    running.start()
    nas = Nas(running.addresses[0], words)
    try:
        nas.send(start(nas, 1))
        assert wait_until(lambda: running.view().dropped == {"unknown_nas": 1}, 5.0, 0.005)
        assert nas.answer(0.1) is None
    finally:
        nas.close()
        running.stop()


def test_unusable_packets_are_answered_without_the_store(
    server: RadiusServer, nas: Nas, feed: FakeFeed
) -> None:
    nas.send(nas.packet(7, Acct_Status_Type="Start", Acct_Session_Id="s", User_Name="bad name"))
    assert nas.answer(5) is not None
    nas.send(nas.packet(8, Acct_Status_Type="Failed", User_Name="a"))
    assert nas.answer(5) is not None
    assert feed.calls == []
    assert server.view().packets == {("start", "invalid"): 1, ("other", "ignored"): 1}


def test_store_outcomes_are_counted(server: RadiusServer, nas: Nas, feed: FakeFeed) -> None:
    feed.status["cust-out"] = "unpooled"
    nas.send(start(nas, 9, "cust-out", "198.51.100.7"))
    assert nas.answer(5) is not None
    assert server.view().packets == {("start", "unpooled"): 1}


def test_packets_arriving_together_commit_together(
    server: RadiusServer, nas: Nas, feed: FakeFeed
) -> None:
    feed.gate.clear()
    nas.send(start(nas, 0, "first"))
    assert feed.entered.wait(5)
    for index in range(1, 201):
        nas.send(start(nas, index % 256, f"cust-{index}", f"100.64.1.{index % 250}"))
    assert wait_until(lambda: server.view().queued == 200, 5.0, 0.005)
    feed.gate.set()
    answers = [nas.answer(5) for _ in range(201)]
    assert all(answers)
    assert [len(call) for call in feed.calls] == [1, 200]


def test_a_full_queue_drops_and_counts(tmp_path: Path, feed: FakeFeed, words: Any) -> None:
    running = make_server(tmp_path, feed, max_queue=5)
    nas = Nas(running.addresses[0], words)
    try:
        feed.gate.clear()
        nas.send(start(nas, 0, "first"))
        assert feed.entered.wait(5)
        for index in range(1, 11):
            nas.send(start(nas, index, f"cust-{index}"))
        assert wait_until(lambda: running.view().dropped.get("queue_full") == 5, 5.0, 0.005)
        feed.gate.set()
        assert sum(1 for _ in range(6) if nas.answer(5)) == 6
        assert nas.answer(0.1) is None
        # What was dropped is processed when the NAS retransmits it.
        nas.send(start(nas, 10, "cust-10"))
        assert nas.answer(5) is not None
        assert "cust-10" in [e.account for e in feed.events]
    finally:
        feed.gate.set()
        nas.close()
        running.stop()


def test_a_failed_commit_answers_nothing_and_the_retransmission_succeeds(
    server: RadiusServer, nas: Nas, feed: FakeFeed
) -> None:
    feed.failing = True
    data = start(nas, 11)
    nas.send(data)
    assert wait_until(lambda: server.view().dropped.get("commit_failed") == 1, 5.0, 0.005)
    assert nas.answer(0.1) is None
    feed.failing = False
    nas.send(data)
    assert nas.answer(5) is not None
    assert len(feed.events) == 1


def test_listen_address_in_use_is_named(tmp_path: Path, server: RadiusServer) -> None:
    from edgectl.controller.errors import Invalid

    host, port = server.addresses[0]
    with pytest.raises(Invalid) as caught:
        bind([(host, port)])
    assert caught.value.path == "controller.radius.listen"
    assert f"{host}:{port}" in caught.value.reason


def test_a_killed_worker_is_restarted_and_the_feed_goes_on(
    server: RadiusServer, nas: Nas, feed: FakeFeed
) -> None:
    nas.send(start(nas, 12, "before"))
    assert nas.answer(5) is not None
    first = server.worker_pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    assert wait_until(lambda: server.restarts == 1 and server.worker_pid not in (None, first), 10)
    data = start(nas, 13, "after")
    nas.send(data)
    reply = nas.answer(10)
    assert reply is not None and codec.is_response_to(reply, data, SECRET.encode())
    assert [e.account for e in feed.events] == ["before", "after"]
    assert server.view().worker_restarts == 1


def test_a_worker_that_dies_mid_commit_never_answers_that_batch(
    server: RadiusServer, nas: Nas, feed: FakeFeed
) -> None:
    """The batch is stored, but its worker is gone: the NAS gets no answer until
    it retransmits, and the new worker answers only after storing it again."""
    feed.gate.clear()
    data = start(nas, 14, "mid")
    nas.send(data)
    assert feed.entered.wait(5)
    first = server.worker_pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    assert wait_until(lambda: server.worker_pid not in (None, first), 10)
    feed.gate.set()
    assert nas.answer(0.3) is None
    nas.send(data)  # the NAS's retransmission
    assert nas.answer(10) is not None
    assert [e.account for e in feed.events] == ["mid", "mid"]


# A controller of its own: a RadiusServer over a fake feed, its worker's pid printed.
_CONTROLLER = """
import dataclasses, sys
sys.path.insert(0, sys.argv[2])
from radius_support import FakeFeed
from edgectl.controller.radius import config
from edgectl.controller.radius.server import Feed, RadiusServer, bind
from edgectl.testing.wait import wait_until
parsed = config.parse({"listen": "127.0.0.1:1813", "clients": sys.argv[1]})
settings = dataclasses.replace(parsed, listen=(("127.0.0.1", 0),))
server = RadiusServer(settings, Feed(FakeFeed().apply), bind(settings.listen))
server.start()
assert wait_until(lambda: server.worker_pid is not None, 10)
print(server.worker_pid, flush=True)
sys.stdin.read()  # alive until killed (or until the test's end of the pipe closes)
"""


def test_the_worker_dies_with_its_controller(tmp_path: Path) -> None:
    path = clients_file(tmp_path, ("bng-1", "127.0.0.1", SECRET))
    here = str(Path(__file__).resolve().parent)
    with subprocess.Popen(
        [sys.executable, "-c", _CONTROLLER, str(path), here],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as controller:
        try:
            assert controller.stdout is not None
            worker = int(controller.stdout.readline())
            assert _alive(worker)
            controller.kill()  # kill -9: no clean-up of its own runs
            controller.wait(10)
            assert wait_until(lambda: not _alive(worker), 10)
        finally:
            controller.kill()


def _alive(pid: int) -> bool:
    """Running (a zombie awaiting its reaper is dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"
