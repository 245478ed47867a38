"""A real converge of ansible/ over SSH: two controller hosts on one PostgreSQL server.

``ctl-1`` and ``ctl-2`` (each its own namespace, sshd, path prefix and service
user) share one database on a real PostgreSQL server on the management
network (the ``db`` host, 192.0.2.5, a password for every TCP client). The
controllers' DSN, password included, reaches Ansible only as an ansible-vault
encrypted ``group_vars`` file opened with a password file, as an operator
keeps it (ansible_fixtures.py). The gateways' agents are given both URLs.

One deployment serves every test here (the converge is most of the run time);
the test that kills controller 1 is named to run last.
"""

from __future__ import annotations

import grp
import hashlib
import pwd
import stat
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from ansible_fixtures import (
    CONTROLLER_PAIR,
    DATABASE_NAME,
    GATEWAYS,
    MX,
    SUBMISSION,
    Deployed,
    Fleet,
    built_fleet,
    check_unit,
    deploy,
    mail_listeners,
    recap,
)

from edgectl.controller.store.db import Database
from edgectl.lab.probe import Outcome, connect
from edgectl.testing.rest import Rest
from edgectl.testing.wait import wait_until

CTL_1, CTL_2 = CONTROLLER_PAIR
# dyn4 subscribers behind both gateways (each gateway has its own lab).
THROUGH_CTL_1 = "100.64.0.10"
THROUGH_CTL_2 = "100.64.0.12"
# A fourth subscriber the test adds to the lab's dyn4 host (it has .10-.12).
AFTER_FAIL_OVER = "100.64.0.13"
NEIGHBOUR = "100.64.0.11"  # never quarantined
ENFORCE_TIMEOUT = 60.0
# Generous for a loaded machine; issue 15's 5 s fail-over budget is measured
# by netns-tests/test_fleet_failover.py, not here.
FAIL_OVER_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def fleet(request: pytest.FixtureRequest, leftovers_removed: list[str]) -> Fleet:
    return built_fleet(request, controllers=dict(CONTROLLER_PAIR), postgresql=True)


@pytest.fixture(scope="module")
def deployed(fleet: Fleet) -> Deployed:
    return deploy(fleet)


@pytest.fixture
def mail_servers(deployed: Deployed) -> Iterator[None]:
    with mail_listeners(deployed.fleet):
        yield


def _quarantine(fleet: Fleet, subscriber: str, via: str) -> None:
    account = f"cust-{subscriber.replace('.', '-')}"
    fleet.api("PUT", f"/v1/accounts/{account}/session", {"ipv4": subscriber}, via=via)
    created = fleet.api(
        "POST",
        "/v1/quarantines",
        {"account": account, "mode": "smtp", "reason": f"written through {via}",
         "ticket": "T-15", "duration": 3600},
        via=via,
    )  # fmt: skip
    assert created["outcome"] == "created", created


def _connects(fleet: Fleet, gateway: str, subscriber: str, timeout: float = 2.0) -> bool:
    ns = fleet.topologies[gateway].hosts["dyn4"].ns
    return connect(ns, MX, SUBMISSION, src=subscriber, timeout=timeout) is Outcome.CONNECTED


def _enforced_everywhere(fleet: Fleet, subscriber: str, timeout: float) -> None:
    for gateway in GATEWAYS:

        def refused(g: str = gateway) -> bool:
            return not _connects(fleet, g, subscriber, 0.5)

        assert wait_until(refused, timeout, 0.1), (
            f"{gateway} does not refuse {subscriber}\n{fleet.services[gateway].logs()}"
        )


def _parked(fleet: Fleet, controller: str) -> int:
    """Long-polls parked on ``controller`` now (its /metrics)."""
    rest = Rest(
        fleet.url(controller),
        fleet.bootstrap_token(controller),
        netns=fleet.ops_ns,
        ssl_context=fleet.ssl_context(),
    )
    for line in rest.request("GET", "/metrics").splitlines():
        if line.startswith("edgectl_controller_long_polls_parked "):
            return int(float(line.split()[1]))
    raise AssertionError("no edgectl_controller_long_polls_parked on /metrics")


def test_site_converges_on_both_controllers_and_a_second_run_changes_nothing(
    deployed: Deployed,
) -> None:
    fleet = deployed.fleet
    first, second = recap(deployed.first), recap(deployed.second)
    hosts = set(fleet.hosts)
    assert set(first) == hosts and set(second) == hosts, (first, second)
    for host in hosts:
        assert first[host]["failed"] == first[host]["unreachable"] == 0, first
        assert second[host]["failed"] == second[host]["unreachable"] == 0, second
        assert second[host]["changed"] == 0, deployed.second
    assert all(first[g]["changed"] > 0 for g in GATEWAYS), first
    for controller in CONTROLLER_PAIR:
        assert fleet.healthy(controller), fleet.services[controller].logs()
        # Both on PostgreSQL: no SQLite file was made on the side.
        assert not (fleet.root(controller) / "var/lib/edgectl/controller.db").exists()
        check_unit(fleet.unit_path(controller))
    # Both serve the same database: each sees the gateways the first one registered.
    for gateway in GATEWAYS:
        assert {fleet.gateway(gateway, via=c)["converged"] for c in CONTROLLER_PAIR} == {True}


def test_the_schema_is_migrated_one_controller_host_at_a_time(deployed: Deployed) -> None:
    output = deployed.controller
    task = "TASK [edgectl_controller : Bring the database to the latest schema]"
    # serial: 1 - the task runs twice, each time on one host: ctl-1's play,
    # migration included, is over before ctl-2's begins.
    runs = [part.split("TASK [")[0] for part in output.split(task)[1:]]
    assert len(runs) == 2, output
    assert f"[{CTL_1}]" in runs[0] and f"[{CTL_2}]" not in runs[0], output
    assert f"[{CTL_2}]" in runs[1] and f"[{CTL_1}]" not in runs[1], output
    database = deployed.fleet.database
    assert database is not None
    schema = Database(database.socket_url(DATABASE_NAME))
    try:
        assert schema.at_latest_schema()
    finally:
        schema.dispose()


def test_agents_are_given_both_controllers_and_park_on_their_first(deployed: Deployed) -> None:
    fleet = deployed.fleet
    urls = [fleet.url(c) for c in CONTROLLER_PAIR]
    preferred: dict[str, str] = {}
    for gateway in GATEWAYS:
        config = tomllib.loads((fleet.root(gateway) / "etc/edgectl/agent.toml").read_text())
        # agent.toml.j2 rotates the list by a hash of the gateway's name.
        first = int(hashlib.sha1(gateway.encode()).hexdigest()[:8], 16) % len(urls)
        assert config["agent"]["controller_urls"] == urls[first:] + urls[:first], config
        assert "controller_url" not in config["agent"], config
        preferred[gateway] = list(CONTROLLER_PAIR)[first]
    # The fail-over test below kills ctl-1: it must be some agent's first choice.
    assert CTL_1 in preferred.values(), preferred
    on_ctl_1 = sum(1 for c in preferred.values() if c == CTL_1)
    assert wait_until(lambda: _parked(fleet, CTL_1) == on_ctl_1, 30.0, 0.2), _parked(fleet, CTL_1)


def test_a_quarantine_through_either_controller_is_enforced_by_both_agents(
    deployed: Deployed, mail_servers: None
) -> None:
    fleet = deployed.fleet
    for gateway in GATEWAYS:
        for subscriber in (THROUGH_CTL_1, THROUGH_CTL_2, NEIGHBOUR):
            assert _connects(fleet, gateway, subscriber), (gateway, subscriber)
    _quarantine(fleet, THROUGH_CTL_1, via=CTL_1)
    _enforced_everywhere(fleet, THROUGH_CTL_1, ENFORCE_TIMEOUT)
    # Written on the controller the agents do not long-poll: its NOTIFY (or
    # the periodic re-check) reaches them through the shared database.
    _quarantine(fleet, THROUGH_CTL_2, via=CTL_2)
    _enforced_everywhere(fleet, THROUGH_CTL_2, ENFORCE_TIMEOUT)
    for gateway in GATEWAYS:
        assert _connects(fleet, gateway, NEIGHBOUR), gateway


def _readable_by_others(path: Path) -> bool:
    return bool(path.stat().st_mode & stat.S_IROTH)


def test_the_database_password_is_in_no_output_and_no_file_others_can_read(
    deployed: Deployed,
) -> None:
    fleet = deployed.fleet
    password = fleet.database_password.encode()
    assert len(password) >= 24
    for output in deployed.outputs:
        assert fleet.database_password not in output
    # Every file of the run - the hosts' trees, Ansible's local and remote
    # temporary files, the services' logs, the vault file - holds it only in
    # the controllers' settings, which only root and the service group read.
    holders = set()
    for path in fleet.workdir.rglob("*"):
        if path.is_file() and not path.is_symlink() and password in path.read_bytes():
            holders.add(path)
    settings = {fleet.root(c) / "etc/edgectl/controller.toml" for c in CONTROLLER_PAIR}
    assert holders == settings, holders
    for path in settings:
        info = path.stat()
        assert stat.S_IMODE(info.st_mode) == 0o640, f"{path}: {oct(info.st_mode)}"
        assert pwd.getpwuid(info.st_uid).pw_name == "root", path
        assert grp.getgrgid(info.st_gid).gr_name == fleet.user(path.parts[-4]), path
    # The secrets files Ansible itself reads.
    for path in (fleet.vault_password_file, fleet.inventory):
        assert not _readable_by_others(path), path
    # No command line shows it (anyone can read /proc/PID/cmdline).
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            assert password not in cmdline.read_bytes(), cmdline
        except OSError:  # the process ended meanwhile
            continue


def test_secrets_on_each_controller_host_have_tight_modes(deployed: Deployed) -> None:
    fleet = deployed.fleet
    tokens = set()
    for controller in CONTROLLER_PAIR:
        config = fleet.root(controller) / "etc/edgectl"
        for path, mode in (
            (config / "bootstrap-netops.token", 0o600),
            (config / "tls/controller.key", 0o640),
        ):
            assert stat.S_IMODE(path.stat().st_mode) == mode, path
            assert pwd.getpwuid(path.stat().st_uid).pw_name == "root", path
        tokens.add(fleet.bootstrap_token(controller))
    # Each controller host keeps a token of its own, and none is in the output.
    assert len(tokens) == 2
    for output in deployed.outputs:
        assert not any(token in output for token in tokens)


def test_zz_agents_fail_over_to_controller_2_when_controller_1_dies(
    deployed: Deployed, mail_servers: None
) -> None:
    # Named to run last: controller 1 stays down.
    fleet = deployed.fleet
    for topo in fleet.topologies.values():
        host = topo.hosts["dyn4"]
        subprocess.run(
            ["ip", "-n", host.ns, "addr", "add", f"{AFTER_FAIL_OVER}/16", "dev", host.ifname],
            check=True,
            timeout=30,
        )
    for gateway in GATEWAYS:
        assert _connects(fleet, gateway, AFTER_FAIL_OVER), gateway
    fleet.services[CTL_1].kill()
    assert not fleet.healthy(CTL_1)
    _quarantine(fleet, AFTER_FAIL_OVER, via=CTL_2)
    _enforced_everywhere(fleet, AFTER_FAIL_OVER, FAIL_OVER_TIMEOUT)
    # Every agent now long-polls controller 2, and reports its state there.
    assert wait_until(lambda: _parked(fleet, CTL_2) == len(GATEWAYS), FAIL_OVER_TIMEOUT, 0.2)

    def reported() -> bool:
        return all(fleet.gateway(g, via=CTL_2)["converged"] is True for g in GATEWAYS)

    assert wait_until(reported, FAIL_OVER_TIMEOUT, 0.2)
    # What was enforced before still is; the neighbour still is not.
    for gateway in GATEWAYS:
        for subscriber in (THROUGH_CTL_1, THROUGH_CTL_2):
            assert not _connects(fleet, gateway, subscriber, 0.5), (gateway, subscriber)
        assert _connects(fleet, gateway, NEIGHBOUR), gateway
    assert all(fleet.services[g].running() for g in GATEWAYS)
