"""Concurrency caps against real sequential senders: closed or refused connections hold no slot.

The kernel cleans a ``ct count`` list at most once a jiffy, so a sender
whose SMTP dialogues take well under a jiffy (smtp-sink answers a whole one
in ~0.4 ms) was counted with the connections it had just closed, and a SYN
refused by the per-destination cap held a concurrency slot.  These tests
drive Postfix's own ``smtp-source``/``smtp-sink`` and Python SMTP dialogues
back to back, with no pacing: every mail must go through.

This module brings its own ``servers``: the outside MX keeps port 587 free
for smtp-sink.
"""

from __future__ import annotations

import shutil
import smtplib
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
from gateway_fixtures import (
    ANSWER_TIMEOUT,
    DYN4_A,
    DYN6_A1,
    MX4,
    MX4_SECOND,
    MX6,
    SOURCE_HOST,
    WEB_PORTS,
    Gateway,
    Servers,
    base_policy,
    listening,
    with_profile,
)

from edgectl.lab.netns import in_netns
from edgectl.lab.probe import Outcome, connect
from edgectl.lab.topology import Topology
from edgectl.testing.wait import wait_until

PORT = 587
MAILS = 8
# The profile: three mail connections at once, two to one destination.
CAPS = {"new_per_minute": 10_000, "burst": 1_000, "concurrent": 3, "per_destination": 2}
# A connection the gateway did not hold back answers within a few ms; one it
# held back waits for TCP's first SYN resend (~1 s).
NOT_HELD_BACK = 0.5
IN_NS = ("ip", "netns", "exec")

pytestmark = pytest.mark.skipif(
    shutil.which("smtp-sink") is None or shutil.which("smtp-source") is None,
    reason="Postfix's smtp-sink/smtp-source missing (scripts/setup.sh installs postfix)",
)


@pytest.fixture(scope="module", name="servers")
def servers_fixture(topology: Topology) -> Iterator[Servers]:
    """The standard listeners, minus the MX's port 587 (smtp-sink's here)."""
    with listening(topology, mx_ports=(25, 465, *WEB_PORTS)) as servers:
        yield servers


@pytest.fixture(scope="module")
def sinks(topology: Topology, servers: Servers) -> Iterator[None]:
    """smtp-sink on 587 of both MX addresses and the IPv6 one; all stopped at the end."""
    ns = topology.hosts["mx"].ns
    processes = []
    try:
        for address in (MX4, MX4_SECOND, f"[{MX6}]"):
            processes.append(
                subprocess.Popen(
                    [*IN_NS, ns, "smtp-sink", "-u", "nobody", f"{address}:{PORT}", "256"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for address in (MX4, MX4_SECOND, MX6):
            # Asked from the MX itself: no gateway, no table in the way.
            listening = wait_until(
                lambda a=address: connect(ns, a, PORT) is Outcome.CONNECTED, 10.0
            )
            assert listening, f"smtp-sink on {address}:{PORT} never listened"
        yield
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=10)


def dialogue(topology: Topology, src: str, dst: str) -> None:
    """One whole SMTP dialogue from ``src`` (EHLO .. QUIT), then close: what an MTA does."""
    smtp = smtplib.SMTP(timeout=10, source_address=(src, 0))
    try:
        # The socket is made in connect(): inside the client's namespace.
        with in_netns(topology.hosts[SOURCE_HOST[src]].ns):
            smtp.connect(dst, PORT)
        smtp.sendmail("a@example.net", ["b@example.org"], b"Subject: t\r\n\r\nhello\r\n")
        smtp.quit()
    finally:
        smtp.close()


def timed_open(
    topology: Topology, src: str, dst: str
) -> tuple[Outcome, float, socket.socket | None]:
    ns = topology.hosts[SOURCE_HOST[src]].ns
    start = time.monotonic()
    outcome, sock = connect(ns, dst, PORT, src=src, timeout=ANSWER_TIMEOUT, keep_open=True)
    return outcome, time.monotonic() - start, sock


def test_postfix_smtp_source_one_session_at_a_time_is_never_refused(
    topology: Topology, gateway: Gateway, sinks: None
) -> None:
    gateway.apply(with_profile(base_policy(), **CAPS))
    ns = topology.hosts["dyn4"].ns
    run = subprocess.run(
        [*IN_NS, ns, "smtp-source", "-s", "1", "-m", str(MAILS), "-c", f"{MX4}:{PORT}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # -c prints the running count of mails sent; a refused connect is fatal.
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.split()[-1] == str(MAILS), run.stdout
    assert gateway.counter("destination_residential") == 0
    assert gateway.counter("concurrent_residential") == 0


@pytest.mark.parametrize(("src", "dst"), [(DYN4_A, MX4), (DYN6_A1, MX6)])
def test_back_to_back_dialogues_and_bare_connections_are_never_refused(
    topology: Topology, gateway: Gateway, sinks: None, src: str, dst: str
) -> None:
    gateway.apply(with_profile(base_policy(), **CAPS))
    for _ in range(MAILS):
        dialogue(topology, src, dst)  # raises on a refused connection
    # Bare connections, opened and closed at once, no SMTP at all.
    ns = topology.hosts[SOURCE_HOST[src]].ns
    outcomes = [connect(ns, dst, PORT, src=src, timeout=ANSWER_TIMEOUT) for _ in range(MAILS)]
    assert outcomes == [Outcome.CONNECTED] * MAILS
    assert gateway.counter("destination_residential") == 0
    assert gateway.counter("concurrent_residential") == 0


def test_refused_attempt_holds_no_slot_and_the_caps_still_hold(
    topology: Topology, gateway: Gateway, sinks: None
) -> None:
    gateway.apply(with_profile(base_policy(), **CAPS))
    held: list[socket.socket] = []
    try:
        for _ in range(2):
            outcome, _, sock = timed_open(topology, DYN4_A, MX4)
            assert outcome is Outcome.CONNECTED and sock is not None
            held.append(sock)
        # A third to the same destination: over per_destination 2, refused.
        outcome, _, _ = timed_open(topology, DYN4_A, MX4)
        assert outcome is Outcome.RESET
        # Right after it, another destination: only 2 are open, so the third
        # slot is free - at once, the refused SYN took no place in the count.
        outcome, took, sock = timed_open(topology, DYN4_A, MX4_SECOND)
        assert outcome is Outcome.CONNECTED and sock is not None, outcome
        held.append(sock)
        assert took < NOT_HELD_BACK, f"held back {took:.2f}s with a free slot"
        # Three open: the concurrency cap refuses a fourth, anywhere.
        outcome, _, _ = timed_open(topology, DYN4_A, MX4_SECOND)
        assert outcome is Outcome.RESET
        assert gateway.counter("destination_residential") == 1
        assert gateway.counter("concurrent_residential") == 1
    finally:
        for sock in held:
            sock.close()
