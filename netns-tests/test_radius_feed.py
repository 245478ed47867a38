"""The RADIUS accounting feed end to end: FreeRADIUS's radclient in the lab's BNG
namespace sends accounting over real UDP to a real controller process, and real
agents enforce what it binds on real gateways (``edgectl lab``, a --name of its
own, brought down in a finalizer).

Addresses are the lab's: the static4 host holds 100.65.0.10 (cust-2001's in
the lab, a pool without rate limits, so probing it as often as we like is
never refused by a meter), the dyn4 host 100.64.0.10-12 (cust-1001..1003).
The quarantined account logs in on cust-2001's address, then moves to
cust-1001's.  Probes are real TCP connects to the outside MX on 587.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from database_fixtures import BOTH_BACKENDS

from edgectl.lab import fleet
from edgectl.lab.probe import Outcome, connect
from edgectl.testing.wait import wait_until

# The controller's database matters here: run on SQLite and on PostgreSQL.
pytestmark = BOTH_BACKENDS

MX4 = "203.0.113.25"
STATIC = "100.65.0.10"  # cust-2001's in the lab (static4 host, business pool)
DYNAMIC = "100.64.0.10"  # cust-1001's (dyn4 host, home_v4 pool: rate-limited)
CONVERGE = 20.0
RADCLIENT_TIMEOUT = 90.0
HOST_OF = {STATIC: "static4", DYNAMIC: "dyn4"}


def _request_text(requests: list[dict[str, str]]) -> str:
    """radclient's input: attribute lines, a blank line between requests."""
    return (
        "\n\n".join(
            "\n".join(f"{name} = {value}" for name, value in request.items())
            for request in requests
        )
        + "\n"
    )


def _radclient_argv(
    state: fleet.LabState, secret_file: Path, *, retries: int, wait: float, extra: list[str]
) -> list[str]:
    return [
        "ip",
        "netns",
        "exec",
        state.bng_ns,
        "radclient",
        "-x",
        "-r",
        str(retries),
        "-t",
        str(wait),
        *extra,
        "-S",
        str(secret_file),
        f"{state.radius_server}:{fleet.RADIUS_PORT}",
        "acct",
    ]


def radclient(
    state: fleet.LabState,
    requests: list[dict[str, str]],
    *,
    secret_file: Path | None = None,
    retries: int = 5,
    wait: float = 1.0,
) -> subprocess.CompletedProcess[str]:
    """radclient in the BNG namespace, one request after the other."""
    argv = _radclient_argv(
        state, secret_file or state.radius_secret_file, retries=retries, wait=wait, extra=[]
    )
    return subprocess.run(
        argv,
        input=_request_text(requests),
        capture_output=True,
        text=True,
        timeout=RADCLIENT_TIMEOUT,
        check=False,
    )


def answered(result: subprocess.CompletedProcess[str]) -> bool:
    return result.returncode == 0 and "Received Accounting-Response" in result.stdout


def start(account: str, session: str, ipv4: str) -> dict[str, str]:
    return {
        "Acct-Status-Type": "Start",
        "Acct-Session-Id": session,
        "User-Name": account,
        "Framed-IP-Address": ipv4,
    }


def stop(account: str, session: str, ipv4: str) -> dict[str, str]:
    return {**start(account, session, ipv4), "Acct-Status-Type": "Stop"}


def mail(state: fleet.LabState, src: str, gateway: str = "gw-a") -> Outcome:
    return connect(state.host_ns(gateway, HOST_OF[src]), MX4, 587, src=src, timeout=1.0)


def becomes(state: fleet.LabState, src: str, outcome: Outcome, gateway: str = "gw-a") -> bool:
    # 0.2 s apart: the dynamic pool meters new mail connections (burst 10), and
    # a probe refused by a meter must never be taken for the quarantine.
    return wait_until(lambda: mail(state, src, gateway) is outcome, timeout=CONVERGE, interval=0.2)


def metrics(state: fleet.LabState) -> str:
    return fleet.rest(state, timeout=5).request("GET", "/metrics")


def sample(state: fleet.LabState, series: str) -> float:
    """One sample of ``/metrics`` (0 when absent or the controller is not answering)."""
    try:
        text = metrics(state)
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


APPLIED_STARTS = 'edgectl_controller_radius_packets_total{type="start",outcome="applied"}'
BAD_AUTHENTICATOR = 'edgectl_controller_radius_dropped_total{reason="bad_authenticator"}'


def holders(state: fleet.LabState, address: str) -> list[str]:
    """Who holds ``address`` now (the controller answers 404 for nobody)."""
    try:
        found = fleet.api(state, "GET", f"/v1/accounts?address={address}")
    except fleet.ApiError as error:
        if error.status == 404:
            return []
        raise
    return [h["account"] for h in found]


@pytest.fixture(scope="module")
def lab(leftovers_removed: list[str], controller_database: str | None) -> Iterator[fleet.LabState]:
    name = f"radius-{secrets.token_hex(3)}"
    try:
        yield fleet.up(name, database_url=controller_database).state
    finally:
        fleet.down(name)


def test_the_lab_bound_its_sessions_over_radius(lab: fleet.LabState) -> None:
    assert holders(lab, DYNAMIC) == ["cust-1001"]
    assert holders(lab, "2001:db8:1000:100::/56") == ["cust-1001"]
    assert holders(lab, STATIC) == ["cust-2001"]
    nas = f'edgectl_controller_radius_open_sessions{{nas="{fleet.BNG_NAME}"}}'
    assert sample(lab, nas) == len(fleet.ACCOUNTS)
    assert sample(lab, APPLIED_STARTS) == len(fleet.ACCOUNTS)
    clients = lab.directory / "radius-clients.toml"
    assert clients.stat().st_mode & 0o777 == 0o600
    assert lab.radius_secret_file.stat().st_mode & 0o777 == 0o600


def test_a_quarantine_follows_the_accounting(lab: fleet.LabState) -> None:
    fleet.api(
        lab,
        "POST",
        "/v1/quarantines",
        {
            "account": "spammer-1",
            "mode": "smtp",
            "reason": "netns test: quarantined before it logs in",
            "ticket": "T-1",
            "duration": 3600,
        },
    )
    # cust-2001's session on STATIC ends; the quarantined account logs in there.
    assert answered(radclient(lab, [stop("cust-2001", "lab-cust-2001", STATIC)]))
    assert mail(lab, STATIC) is Outcome.CONNECTED
    assert answered(radclient(lab, [start("spammer-1", "q-1", STATIC)]))
    assert holders(lab, STATIC) == ["spammer-1"]  # answered = stored
    assert becomes(lab, STATIC, Outcome.RESET), "the Acct-Start did not bring the quarantine"
    assert becomes(lab, STATIC, Outcome.RESET, "gw-b"), "gw-b serves the same pools"
    assert mail(lab, DYNAMIC) is Outcome.CONNECTED  # nobody else is refused
    # Its Stop frees the address.
    assert answered(radclient(lab, [stop("spammer-1", "q-1", STATIC)]))
    assert becomes(lab, STATIC, Outcome.CONNECTED)
    # A new session elsewhere: the quarantine moves with it.
    assert answered(radclient(lab, [stop("cust-1001", "lab-cust-1001", DYNAMIC)]))
    assert answered(radclient(lab, [start("spammer-1", "q-2", DYNAMIC)]))
    assert becomes(lab, DYNAMIC, Outcome.RESET)
    assert mail(lab, STATIC) is Outcome.CONNECTED
    # Accounting-On: the NAS restarted, every session it had is over.
    on = {"Acct-Status-Type": "Accounting-On", "NAS-IP-Address": "192.0.2.10"}
    assert answered(radclient(lab, [on]))
    assert holders(lab, DYNAMIC) == []
    assert holders(lab, "100.64.0.11") == []  # cust-1002's lab session ended too
    assert becomes(lab, DYNAMIC, Outcome.CONNECTED)
    nas = f'edgectl_controller_radius_open_sessions{{nas="{fleet.BNG_NAME}"}}'
    assert wait_until(lambda: sample(lab, nas) == 0, timeout=CONVERGE, interval=0.2)


def test_a_wrong_secret_gets_no_answer(lab: fleet.LabState, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.secret"
    wrong.write_text("not-the-lab-secret-at-all\n")
    wrong.chmod(0o600)
    dropped = sample(lab, BAD_AUTHENTICATOR)
    result = radclient(
        lab, [start("intruder", "x-1", STATIC)], secret_file=wrong, retries=2, wait=1.0
    )
    assert result.returncode != 0, result.stdout
    assert "no reply from server" in (result.stdout + result.stderr).lower(), result.stdout
    assert "Received Accounting-Response" not in result.stdout
    assert "intruder" not in holders(lab, STATIC)
    # radclient sent it twice (-r 2 is two tries): both dropped, counted, unanswered.
    assert sample(lab, BAD_AUTHENTICATOR) == dropped + 2


def test_a_killed_controller_loses_no_acknowledged_packet(
    lab: fleet.LabState, tmp_path: Path
) -> None:
    accounts = [f"storm-{n}" for n in range(200)]
    requests = [start(a, f"k-{a}", f"100.64.2.{1 + n}") for n, a in enumerate(accounts)]
    pid = fleet.process_pid(lab, "controller")
    assert pid is not None
    before = sample(lab, APPLIED_STARTS)
    # From a file, not stdin: communicate() would flush a stdin already closed.
    request_file = tmp_path / "storm.requests"
    request_file.write_text(_request_text(requests))
    # 40 a second, 8 in flight, each retransmitted every second up to 30 times:
    # the feed lasts ~5 s, and the kill lands in it.
    extra = ["-p", "8", "-n", "40", "-f", str(request_file)]
    argv = _radclient_argv(lab, lab.radius_secret_file, retries=30, wait=1.0, extra=extra)
    # Its output to a file: -x prints every packet, more than a pipe holds
    # while nobody reads it (radclient would stall mid-feed).
    log_file = tmp_path / "radclient.out"
    with log_file.open("w") as log:
        sender = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        # Mid-feed: once this process has acknowledged some, it dies without a word.
        assert wait_until(
            lambda: sample(lab, APPLIED_STARTS) >= before + 20, timeout=30, interval=0.05
        )
        acknowledged = sample(lab, APPLIED_STARTS) - before
        os.kill(pid, signal.SIGKILL)
        assert acknowledged < len(accounts), "the feed was over before the kill"
        assert wait_until(lambda: fleet.process_pid(lab, "controller") is None, timeout=10)
        fleet.start_controller(lab)
        fleet.wait_healthy(lab)
        sender.wait(timeout=RADCLIENT_TIMEOUT)
    finally:
        if sender.poll() is None:
            sender.kill()
            sender.wait(timeout=10)
    output = log_file.read_text()
    # Every request was answered in the end (by one process or the other) ...
    assert sender.returncode == 0, output[-3000:]
    assert output.count("Received Accounting-Response") >= len(accounts)
    # ... and whatever was answered is stored, before the kill as after it.
    for account, request in zip(accounts, requests, strict=True):
        assert holders(lab, request["Framed-IP-Address"]) == [account], account
