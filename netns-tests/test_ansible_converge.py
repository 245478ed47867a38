"""A real converge of ansible/ over SSH: one controller host, two gateway hosts.

The playbooks deploy edgectl to namespaces that each run sshd (ansible_fixtures.py),
a second run of site.yml changes nothing, the rendered units pass
``systemd-analyze verify``, the services run exactly as their units say, a
quarantine made through the deployed controller's API is enforced by both
deployed agents (real TCP), and decommission.yml leaves nothing behind.

This machine has no systemd as PID 1, so the test plays its part
(``ansible_fixtures.deploy``). Two controller hosts on PostgreSQL:
test_ansible_two_controllers.py.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import pwd
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from ansible_fixtures import (
    GATEWAYS,
    MX,
    SKELETON,
    SUBMISSION,
    Deployed,
    Fleet,
    built_fleet,
    check_unit,
    deploy,
    gateway_settings,
    mail_listeners,
    recap,
)

from edgectl.lab.probe import Outcome, connect
from edgectl.testing.processes import nft
from edgectl.testing.rest import HttpError
from edgectl.testing.wait import wait_until

SUBSCRIBER = "100.64.0.10"  # dyn4 pool, behind both gateways (each has its own lab)
NEIGHBOUR = "100.64.0.11"  # same pool, not quarantined
ENFORCE_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def fleet(request: pytest.FixtureRequest, leftovers_removed: list[str]) -> Fleet:
    return built_fleet(request)  # one controller host, on SQLite


def _gateway(fleet: Fleet, name: str) -> dict[str, object]:
    return fleet.gateway(name)


@pytest.fixture(scope="module")
def deployed(fleet: Fleet) -> Deployed:
    return deploy(fleet)


def test_site_converges_and_a_second_run_changes_nothing(deployed: Deployed) -> None:
    first, second = recap(deployed.first), recap(deployed.second)
    hosts = {"ctl", *GATEWAYS}
    assert set(first) == hosts and set(second) == hosts, (first, second)
    for host in hosts:
        assert first[host]["failed"] == first[host]["unreachable"] == 0, first
        assert second[host]["failed"] == second[host]["unreachable"] == 0, second
        assert second[host]["changed"] == 0, deployed.second
    # The first site.yml registered both gateways (their config and token are new).
    assert all(first[g]["changed"] > 0 for g in GATEWAYS), first


def test_gateways_are_registered_and_report_their_revision(deployed: Deployed) -> None:
    for name in GATEWAYS:
        gateway = _gateway(deployed.fleet, name)
        assert sorted(gateway["pools"]) == ["dyn4", "static4"]  # type: ignore[arg-type]
        assert gateway["converged"] is True
        assert deployed.fleet.services[name].running(), deployed.fleet.services[name].logs()


def test_secrets_have_tight_modes_and_never_reach_the_output(deployed: Deployed) -> None:
    fleet = deployed.fleet
    ctl = fleet.root("ctl")
    bootstrap = ctl / "etc/edgectl/bootstrap-netops.token"
    expected = {
        bootstrap: ("root", 0o600),
        ctl / "etc/edgectl/controller.toml": ("root", 0o640),
        ctl / "etc/edgectl/tls/controller.key": ("root", 0o640),
        ctl / "var/lib/edgectl/controller.db": (fleet.user("ctl"), 0o600),
    }
    for gateway in GATEWAYS:
        expected[fleet.root(gateway) / "etc/edgectl/agent.token"] = ("root", 0o640)
        expected[fleet.root(gateway) / "etc/edgectl/agent.toml"] = ("root", 0o640)
    for path, (owner, mode) in expected.items():
        info = path.stat()
        assert stat.S_IMODE(info.st_mode) == mode, f"{path}: {oct(info.st_mode)}"
        assert pwd.getpwuid(info.st_uid).pw_name == owner, path
    secrets = [bootstrap.read_text().strip()]
    secrets += [(fleet.root(g) / "etc/edgectl/agent.token").read_text().strip() for g in GATEWAYS]
    for output in (deployed.first, deployed.second):
        for secret in secrets:
            assert secret and secret not in output


def test_rendered_units_pass_systemd_analyze_verify(deployed: Deployed) -> None:
    for host in deployed.fleet.hosts:
        check_unit(deployed.fleet.unit_path(host))


def test_agents_run_with_cap_net_admin_only(deployed: Deployed) -> None:
    for gateway in GATEWAYS:
        service = deployed.fleet.services[gateway]
        assert service.proc is not None
        # ip netns exec -> setpriv -> exec edgectl: the same pid ends up as the agent.
        status = Path(f"/proc/{service.proc.pid}/status").read_text()
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        net_admin = f"{1 << 12:016x}"
        assert fields["CapEff"].strip() == net_admin, status
        assert fields["CapBnd"].strip() == net_admin, status
        assert fields["Uid"].split()[0] != "0", status


@pytest.fixture
def mail_servers(deployed: Deployed) -> Iterator[None]:
    with mail_listeners(deployed.fleet):
        yield


def test_a_quarantine_through_the_api_is_enforced_by_both_agents(
    deployed: Deployed, mail_servers: None
) -> None:
    fleet = deployed.fleet
    sources = {g: topo.hosts["dyn4"].ns for g, topo in fleet.topologies.items()}
    for gateway, ns in sources.items():
        outcome = connect(ns, MX, SUBMISSION, src=SUBSCRIBER, timeout=2.0)
        assert outcome is Outcome.CONNECTED, (gateway, outcome)
    fleet.api("PUT", "/v1/accounts/cust-ansible/session", {"ipv4": SUBSCRIBER})
    created = fleet.api(
        "POST",
        "/v1/quarantines",
        {"account": "cust-ansible", "mode": "smtp", "reason": "ansible converge test",
         "ticket": "T-1", "duration": 3600},
    )  # fmt: skip
    assert created["outcome"] == "created"

    def refused(ns: str) -> bool:
        return connect(ns, MX, SUBMISSION, src=SUBSCRIBER, timeout=0.5) is not Outcome.CONNECTED

    for gateway, ns in sources.items():
        assert wait_until(lambda n=ns: refused(n), ENFORCE_TIMEOUT, 0.1), (
            f"{gateway} does not enforce the quarantine\n{fleet.services[gateway].logs()}"
        )
        # The neighbour in the same pool is untouched.
        assert connect(ns, MX, SUBMISSION, src=NEIGHBOUR, timeout=2.0) is Outcome.CONNECTED


def test_an_agent_token_from_vault_is_checked_before_it_is_installed(deployed: Deployed) -> None:
    fleet = deployed.fleet
    token_file = fleet.root("gw-a") / "etc/edgectl/agent.token"
    issued = token_file.read_text().strip()
    extra = fleet.workdir / "vault-token.json"  # as a Vault file would, not on the command line
    fd = os.open(extra, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump({"edgectl_agent_token": issued}, file)
    # The token the controller issued, kept in Vault: accepted, nothing changes.
    accepted = recap(fleet.playbook("gateways.yml", "--limit", "gw-a", "-e", f"@{extra}"))
    assert accepted["gw-a"]["changed"] == 0, accepted
    # A token the controller does not know: refused before it replaces the working one.
    with extra.open("w") as file:
        json.dump({"edgectl_agent_token": "not-a-token-the-controller-issued"}, file)
    returncode, output = fleet.playbook_result("gateways.yml", "--limit", "gw-a", "-e", f"@{extra}")
    assert returncode != 0, output
    assert "Check that the controller accepts the token from Vault" in output
    assert "not-a-token-the-controller-issued" not in output
    assert token_file.read_text().strip() == issued
    assert fleet.services["gw-a"].running()


def _canonical(value: object) -> object:
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, str) and "/" in value:
        network = ipaddress.ip_network(value)
        if network.prefixlen == network.max_prefixlen:
            return str(network.network_address)
    return value


def test_every_gateway_setting_in_the_inventory_reaches_the_controller(deployed: Deployed) -> None:
    wanted = gateway_settings()
    for name in GATEWAYS:
        have = _gateway(deployed.fleet, name)["settings"]
        assert isinstance(have, dict)
        assert {k: _canonical(have.get(k)) for k in wanted} == {
            k: _canonical(v) for k, v in wanted.items()
        }


def _catalogue(fleet: Fleet) -> dict[str, object]:
    found = {p: fleet.api("GET", f"/v1/{p}") for p in ("rate-limits", "relays", "pools")}
    audit = fleet.api("GET", "/v1/audit")
    found["audit"] = [e for e in audit if e["object_type"] in ("pool", "relay", "rate_limit")]
    return found


def _files(root: Path) -> dict[str, tuple[int, str]]:
    """Mode and content hash of every file under ``root``."""
    return {
        str(path.relative_to(root)): (
            path.stat().st_mode,
            hashlib.sha256(path.read_bytes()).hexdigest(),
        )
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_a_bad_catalogue_changes_nothing(deployed: Deployed) -> None:
    fleet = deployed.fleet
    config = fleet.root("ctl") / "etc"
    before, files = _catalogue(fleet), _files(config)
    extra = fleet.workdir / "bad-catalogue.json"
    # Each also changes a profile and adds a relay, listed before the bad pool.
    good_changes = {
        "edgectl_controller_rate_limits": [
            {"name": "residential", "new_per_minute": 60, "burst": 100, "shadow": True}
        ],
        "edgectl_controller_relays": [
            {"name": "isp_smtp", "prefixes": ["198.51.100.25/32"]},
            {"name": "isp_smtp2", "prefixes": ["198.51.100.26/32"]},
        ],
    }
    pools = [
        {"name": "dyn4", "kind": "dynamic", "prefixes": ["100.64.0.0/16"],
         "rate_limit": "residential"},
        {"name": "static4", "kind": "static", "prefixes": ["100.65.0.0/24"]},
    ]  # fmt: skip
    cases = {
        # the argument spec: options for every pool
        "Validation of arguments failed": {
            "name": "x", "kind": "dynamik", "prefixes": ["100.66.0.0/16"],
        },
        # the model's own checks, on the controller host, before the first write
        "pools[2] (x).prefixes[0]: '100.66.0.1/16' has host bits set": {
            "name": "x", "kind": "static", "prefixes": ["100.66.0.1/16"],
        },
        "pools[2] (x)": {"name": "x", "kind": "static", "prefixes": ["100.65.0.0/24"]},
    }  # fmt: skip
    for message, bad in cases.items():
        extra.write_text(json.dumps({**good_changes, "edgectl_controller_pools": [*pools, bad]}))
        returncode, output = fleet.playbook_result("catalogue.yml", "-e", f"@{extra}")
        assert returncode != 0, output
        assert message in output, output
        assert recap(output)["ctl"]["changed"] == 0, output
        assert _catalogue(fleet) == before, message
        assert _files(config) == files, message


def test_the_agent_role_runs_without_a_controller_group(deployed: Deployed) -> None:
    fleet = deployed.fleet
    inventory = json.loads(fleet.inventory.read_text())
    del inventory["edgectl_controller"]
    inventory["edgectl_gateways"]["vars"]["edgectl_agent_register"] = False
    alone = fleet.workdir / "inventory-without-controller.json"
    fd = os.open(alone, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(inventory, file)
    token_file = fleet.root("gw-a") / "etc/edgectl/agent.token"
    extra = fleet.workdir / "vault-token-alone.json"
    fd = os.open(extra, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump({"edgectl_agent_token": token_file.read_text().strip()}, file)
    returncode, output = fleet.playbook_result(
        "gateways.yml", "--limit", "gw-a", "-e", f"@{extra}", inventory=alone
    )
    assert returncode == 0, output
    assert recap(output)["gw-a"]["changed"] == 0, output
    assert fleet.services["gw-a"].running()


def _nft_tables(ns: str) -> str:
    return nft(ns, "list", "tables").stdout


def test_zz_decommission_leaves_no_table_unit_or_file(deployed: Deployed) -> None:
    # Named to run last in this module: it removes what the other tests use.
    fleet = deployed.fleet
    for gateway in GATEWAYS:
        assert "table inet edgectl" in _nft_tables(fleet.gw_ns(gateway))
        # systemctl stop: SIGTERM; the table stays in force until decommission.
        fleet.services[gateway].stop()
        assert "table inet edgectl" in _nft_tables(fleet.gw_ns(gateway))
    fleet.playbook("decommission.yml", "--limit", "edgectl_gateways")
    for gateway in GATEWAYS:
        assert "edgectl" not in _nft_tables(fleet.gw_ns(gateway))
        root = fleet.root(gateway)
        left = sorted(
            str(p.relative_to(root))
            for p in root.rglob("*")
            if not any(str(p.relative_to(root)) in (s, *_parents(s)) for s in SKELETON)
        )
        assert left == [], left
        assert not fleet.unit_path(gateway).exists()
        user = fleet.user(gateway)
        assert subprocess.run(["getent", "passwd", user], check=False).returncode != 0
        with pytest.raises(HttpError) as missing:
            _gateway(fleet, gateway)
        assert missing.value.status == 404
    # A second decommission finds nothing to do and still succeeds.
    again = recap(fleet.playbook("decommission.yml", "--limit", "edgectl_gateways"))
    assert all(again[g]["failed"] == 0 for g in GATEWAYS), again


def _parents(relative: str) -> list[str]:
    parts = relative.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]
