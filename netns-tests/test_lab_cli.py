"""``edgectl lab up``/``down``: real processes, and what ``up`` prints works as printed.

The first test runs ``lab up``, then every command it printed (lines
``    $ ...``) literally through bash, in order, checking each probe against
the outcome the text announces, then ``lab down``; the second kills ``lab
up`` half-way and checks that ``lab down`` still removes every process,
namespace and file.  Each lab gets its own ``--name``, so a lab someone left
up on this machine is never touched; every lab is brought down in a
finalizer, and every wait is bounded.
"""

from __future__ import annotations

import functools
import json
import os
import re
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgectl.lab import netns
from edgectl.lab.fleet import STATE_ROOT, LabState, lab_pids
from edgectl.lab.topology import OWNER_DIR
from edgectl.model import Prefix
from edgectl.testing.processes import EDGECTL, alive
from edgectl.testing.wait import wait_until

PYTHON = sys.executable
UP_TIMEOUT = 120.0
COMMAND_TIMEOUT = 30.0
CONVERGE_TIMEOUT = 15.0
OUTCOMES = ("CONNECTED", "RESET", "UNREACHABLE", "TIMEOUT")
_EXPECT = re.compile(r":\s*(" + "|".join(OUTCOMES) + r")\s*$")


LAB = [EDGECTL, "lab"]


def lab(*args: str, timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LAB, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def shell(command: str) -> subprocess.CompletedProcess[str]:
    """One printed command, exactly as printed, through bash."""
    return subprocess.run(
        ["bash", "-c", command],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


def leftovers(state: LabState) -> list[str]:
    """Whatever of this lab still exists: namespaces, owner files, its directory."""
    found = [
        ns
        for ns in netns.list_namespaces()
        if any(ns.startswith(prefix + "-") for prefix in state.prefixes.values())
    ]
    found += [
        str(OWNER_DIR / f"{prefix}.owner")
        for prefix in state.prefixes.values()
        if (OWNER_DIR / f"{prefix}.owner").exists()
    ]
    if state.directory.exists():
        found.append(str(state.directory))
    return found


@pytest.fixture(name="lab_name")
def lab_name_fixture(leftovers_removed: list[str]) -> Iterator[str]:
    name = f"t{secrets.token_hex(3)}"
    try:
        yield name
    finally:
        done = lab("down", "--name", name, timeout=60)
        assert done.returncode == 0, done.stderr


def _gateways(get_command: str) -> list[dict[str, Any]]:
    answer = shell(get_command)
    assert answer.returncode == 0, answer.stderr
    gateways: list[dict[str, Any]] = json.loads(answer.stdout)
    return gateways


# What the printed probes make the gateways log, as (key, kind, policy, gateways, account).
EXPECTED_OFFENDERS = {
    (Prefix.parse("100.64.0.11"), "quarantine", "smtp", ("gw-a", "gw-b"), "cust-1002"),
    (Prefix.parse("100.64.0.10"), "op25b", "home_v4", ("gw-a",), "cust-1001"),
    (Prefix.parse("2001:db8:1000:100::/56"), "op25b", "home_v6", ("gw-b",), "cust-1001"),
}


def _offenders(get_command: str) -> set[tuple[Prefix, str, str, tuple[str, ...], str | None]]:
    answer = shell(get_command)
    assert answer.returncode == 0, answer.stderr
    return {
        (Prefix.parse(e["key"]), e["kind"], e["policy"], tuple(e["gateways"]), e["account"])
        for e in json.loads(answer.stdout)
    }


def _offenders_are(get_command: str, expected: set[Any]) -> bool:
    return _offenders(get_command) == expected


def _converged_past(get_command: str, before: dict[str, int]) -> bool:
    """Every gateway's revision moved past ``before`` and its agent applied it."""
    gateways = _gateways(get_command)
    return all(
        gw["converged"]
        and gw["revision"] > before[gw["name"]]
        and (gw["status"] or {}).get("applied_revision") == gw["revision"]
        for gw in gateways
    )


def root_namespace() -> dict[str, str]:
    """The root namespace's links, addresses, routes and ruleset (what the lab must not touch)."""
    views = {
        "links": ["ip", "-o", "link", "show"],
        "addresses": ["ip", "-o", "addr", "show"],
        "routes4": ["ip", "-4", "route", "show", "table", "all"],
        "routes6": ["ip", "-6", "route", "show", "table", "all"],
        "ruleset": ["nft", "list", "ruleset"],
    }
    out: dict[str, str] = {}
    for name, argv in views.items():
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
        out[name] = result.stdout
    return out


def _same_ns(pid: int, ns_file: Path) -> bool:
    mine, theirs = os.stat(f"/proc/{pid}/ns/net"), os.stat(ns_file)
    return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)


def test_up_prints_commands_that_work_as_printed(lab_name: str) -> None:
    root_before = root_namespace()
    started = lab("up", "--name", lab_name, timeout=UP_TIMEOUT)
    assert started.returncode == 0, started.stdout + started.stderr
    assert root_namespace() == root_before, "lab up changed the root namespace"
    state = LabState.load(lab_name)
    assert state.directory == STATE_ROOT / lab_name
    assert state.directory.stat().st_mode & 0o777 == 0o700
    assert {"hosts", "controller", "agent-gw-a", "agent-gw-b", "portal-gw-a", "portal-gw-b"} <= {
        p.stem for p in state.directory.glob("*.pid")
    }
    # Agents inside their gateway's namespace, the controller in its own:
    # neither in the root one.  Each a daemon in its own session.
    for gateway in state.prefixes:
        pid = int(state.pid_file(f"agent-{gateway}").read_text())
        assert _same_ns(pid, netns.ns_path(state.gateway_ns(gateway)))
        assert os.getsid(pid) == pid
    controller = int(state.pid_file("controller").read_text())
    assert _same_ns(controller, netns.ns_path(state.ctl_ns))
    assert os.getsid(controller) == controller

    again = lab("up", "--name", lab_name)
    assert again.returncode == 2 and "already up" in again.stderr

    lines = started.stdout.splitlines()
    commands = [line.removeprefix("    $ ") for line in lines if line.startswith("    $ ")]
    get_gateways = next(c for c in commands if c.endswith("/v1/gateways"))
    assert all(gw["converged"] for gw in _gateways(get_gateways))

    expect: str | None = None
    probes = quarantines = accounted = captive_checks = 0
    offenders_listed = released = False
    for line in lines:
        if not line.startswith("    $ "):
            match = _EXPECT.search(line)
            if match:
                expect = match.group(1)
            continue
        command = line.removeprefix("    $ ")
        if " probe " in command:
            result = shell(command)
            assert result.stdout.strip() == expect, f"{command}\n{result.stdout}{result.stderr}"
            assert result.returncode == (0 if expect == "CONNECTED" else 1)
            probes += 1
        elif "-X POST" in command and "/v1/quarantines" in command:
            before = {gw["name"]: gw["revision"] for gw in _gateways(get_gateways)}
            result = shell(command)
            assert result.returncode == 0, result.stderr
            answer = json.loads(result.stdout)
            quarantine = answer.get("quarantine", answer)
            if "walled-garden" in command:
                # The notice portal's walkthrough: the printed release uses id 2.
                assert (quarantine["id"], quarantine["account"]) == (2, "cust-1001"), answer
            else:
                assert quarantine["id"] == 1, answer  # the id the printed lift uses
                assert quarantine["account"] == "cust-1002"
            moved = functools.partial(_converged_past, get_gateways, before)
            assert wait_until(moved, CONVERGE_TIMEOUT, 0.1)
            quarantines += 1
        elif command.endswith("/v1/offenders"):
            # Reported within a report interval (5 s in the lab) of the probes above.
            listed = functools.partial(_offenders_are, command, EXPECTED_OFFENDERS)
            assert wait_until(listed, CONVERGE_TIMEOUT, 0.5), _offenders(command)
            offenders_listed = True
        elif command.endswith(" down") or " down --name " in command:
            down = shell(command)
            assert down.returncode == 0, down.stderr
            assert leftovers(state) == []
            assert lab_pids(state.directory) == set()
            again_down = shell(command)
            assert again_down.returncode == 0 and "is down" in again_down.stdout
        elif "/.edgectl/captive" in command:
            result = shell(command)
            assert result.returncode == 0, f"{command}\n{result.stdout}{result.stderr}"
            captive = json.loads(result.stdout)
            assert captive["captive"] is not released, captive
            if not released:
                assert captive["user-portal-url"].endswith(":8080/"), captive
            captive_checks += 1
        elif "Host: example.org" in command:
            result = shell(command)
            assert result.returncode == 0, f"{command}\n{result.stdout}{result.stderr}"
            notice = result.stdout
            assert "cust-1001" in notice and "ABUSE-78" in notice and "botnet" in notice, notice
        elif "/.edgectl/acknowledge" in command:
            before = {gw["name"]: gw["revision"] for gw in _gateways(get_gateways)}
            result = shell(command)
            assert result.returncode == 0, f"{command}\n{result.stdout}{result.stderr}"
            assert 'class="released"' in result.stdout, result.stdout
            # "Released on both gateways within the usual propagation", as printed.
            moved = functools.partial(_converged_past, get_gateways, before)
            assert wait_until(moved, CONVERGE_TIMEOUT, 0.1), _gateways(get_gateways)
            released = True
        elif " radclient " in command:
            # The lab's BNG over real UDP: answered only once the controller stored it.
            result = shell(command)
            assert result.returncode == 0, f"{command}\n{result.stdout}{result.stderr}"
            assert "Received Accounting-Response" in result.stdout, result.stdout
            accounted += 1
        else:
            result = shell(command)
            assert result.returncode == 0, f"{command}\n{result.stdout}{result.stderr}"
            if " nft list table " in command:
                assert "table inet edgectl" in result.stdout
    assert probes >= 8 and quarantines == 3 and offenders_listed, started.stdout
    assert released and captive_checks == 2, started.stdout
    assert accounted == 1, started.stdout
    assert commands[-1].endswith(f"down --name {lab_name}")


def test_down_removes_everything_after_up_was_killed(lab_name: str) -> None:
    directory = STATE_ROOT / lab_name
    up = subprocess.Popen(
        [*LAB, "up", "--name", lab_name],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Killed once its daemons run: namespaces built, processes started.
        assert wait_until(lambda: (directory / "controller.pid").exists(), UP_TIMEOUT, 0.1)
        up.send_signal(signal.SIGKILL)
        up.wait(timeout=10)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait(timeout=10)
    state = LabState.load(lab_name)
    orphans = lab_pids(directory)
    assert orphans, "expected daemons left behind by the killed `lab up`"
    assert any(netns.exists(state.gateway_ns(gw)) for gw in state.prefixes)

    down = lab("down", "--name", lab_name, timeout=60)
    assert down.returncode == 0, down.stderr
    assert leftovers(state) == []
    # Gone, or at most a zombie its new parent has not reaped yet.
    assert lab_pids(directory) == set()
    assert not any(alive(pid) for pid in orphans)
    again = lab("down", "--name", lab_name)
    assert again.returncode == 0 and "is down" in again.stdout
