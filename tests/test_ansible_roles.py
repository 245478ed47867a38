"""The roles refuse a bad inventory before they change anything.

Fast checks of ``ansible/`` that need no root and no SSH (the converge over
SSH is ``netns-tests/test_ansible_converge.py``): the shipped playbooks run
with ``ansible-playbook`` against this machine over a local connection.

* ``catalogue.yml`` runs for real against a controller served on 127.0.0.1
  (SQLite in a temporary directory): a good catalogue is applied and a
  second run changes nothing; a bad one fails and leaves the controller's
  catalogue and audit log exactly as they were.
* the controller role's escalation-policies tasks run for real against a
  migrated SQLite database: loaded when the file changed, not again when it
  did not, nothing in check mode, nothing of a file the controller refuses.
* ``gateways.yml`` runs with a tag nothing carries, so only the role's
  argument validation (tagged ``always``) runs: what the inventory must
  give, and what it need not, is decided there and nowhere later.
"""

from __future__ import annotations

import dataclasses
import grp
import hashlib
import json
import os
import re
import stat
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgectl.controller.store import Store, audit, policies
from edgectl.model import GatewaySettings
from edgectl.testing.processes import free_port, serving
from edgectl.testing.rest import Rest

REPO = Path(__file__).resolve().parent.parent
ANSIBLE_DIR = REPO / "ansible"
VENV_BIN = Path(sys.executable).parent
VALIDATE_ONLY = "edgectl_validate_only"  # a tag no task has: only `always` tasks run
_RECAP = re.compile(r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)", re.M)


def _ansible_playbook() -> Path:
    path = VENV_BIN / "ansible-playbook"
    if not path.exists():
        message = "ansible-playbook is not installed in the virtualenv (pip install ansible-core)"
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


def run_playbook(
    tmp_path: Path, playbook: str, inventory: dict[str, Any], *extra: str
) -> tuple[int, str]:
    """``ansible-playbook ansible/<playbook>`` on an inventory of local hosts."""
    path = tmp_path / f"inventory-{len(list(tmp_path.glob('inventory-*')))}.json"
    path.write_text(json.dumps(inventory))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        {
            "PATH": f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}",
            "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
            "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
            "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_STDOUT_CALLBACK": "default",
        }
    )
    done = subprocess.run(
        [str(_ansible_playbook()), "-i", str(path), str(ANSIBLE_DIR / playbook), *extra],
        cwd=ANSIBLE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def local_host(**variables: Any) -> dict[str, Any]:
    return {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        # The plays become root; these runs need not (and the unit tier has no root).
        "ansible_become": False,
        **variables,
    }


def changed(output: str) -> dict[str, int]:
    return {m["host"]: int(m["changed"]) for m in _RECAP.finditer(output)}


# --- the catalogue against a real controller -----------------------------------


class Controller(Rest):
    def catalogue(self) -> dict[str, Any]:
        return {p: self.get(f"/v1/{p}") for p in ("rate-limits", "relays", "pools")}

    def audit(self) -> list[Any]:
        entries: list[Any] = self.get("/v1/audit")
        return entries


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    tmp_path = tmp_path_factory.mktemp("controller")
    port = free_port()
    config = tmp_path / "controller.toml"
    config.write_text(
        f'[controller]\ndatabase_url = "sqlite:///{tmp_path}/controller.db"\n'
        f'host = "127.0.0.1"\nport = {port}\n'
    )
    config.chmod(0o600)
    edgectl = [sys.executable, "-m", "edgectl.cli"]
    made = subprocess.run(
        [*edgectl, "token", "create", "--role", "netops", "--name", "ansible", "--config",
         str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    argv = [*edgectl, "controller", "--config", str(config)]
    base = f"http://127.0.0.1:{port}"
    with serving(argv, base, log=tmp_path / "controller.log"):
        yield Controller(base, made.stdout.strip())


PROFILES = [{"name": "residential", "new_per_minute": 30, "burst": 10, "shadow": True}]
RELAYS = [{"name": "isp_smtp", "prefixes": ["198.51.100.25/32"]}]
POOLS = [
    {"name": "dyn_v4", "kind": "dynamic", "prefixes": ["100.64.0.0/16"],
     "rate_limit": "residential"},
    {"name": "dyn_v6", "kind": "dynamic", "prefixes": ["2001:db8:1000::/40"],
     "subscriber_prefix_len": 56, "op25b_shadow": True},
    {"name": "business_v4", "kind": "static", "prefixes": ["100.65.0.0/24"]},
]  # fmt: skip


def catalogue_inventory(
    controller: Controller, profiles: list[Any], relays: list[Any], pools: list[Any]
) -> dict[str, Any]:
    host = local_host(
        edgectl_controller_api_url=controller.base_url,
        edgectl_controller_api_token=controller.token,
        edgectl_controller_venv=str(VENV_BIN.parent),
        edgectl_controller_rate_limits=profiles,
        edgectl_controller_relays=relays,
        edgectl_controller_pools=pools,
    )
    return {"edgectl_controller": {"hosts": {"ctl": host}}}


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory, controller: Controller) -> Controller:
    """The controller with the good catalogue, applied once for the module's tests."""
    tmp_path = tmp_path_factory.mktemp("applied")
    inventory = catalogue_inventory(controller, PROFILES, RELAYS, POOLS)
    code, output = run_playbook(tmp_path, "catalogue.yml", inventory)
    assert code == 0, output
    assert changed(output) == {"ctl": 3}, output  # one per task: profiles, relays, pools
    code, output = run_playbook(tmp_path, "catalogue.yml", inventory)
    assert code == 0, output
    assert changed(output) == {"ctl": 0}, output
    return controller


# Each bad inventory also changes a profile and a relay, listed before the bad
# pool: the run must not apply them.
MORE = {
    "profiles": [{**PROFILES[0], "burst": 20},
                 {"name": "business", "new_per_minute": 60, "burst": 60}],
    "relays": [{"name": "isp_smtp", "prefixes": ["198.51.100.25/32", "198.51.100.26/32"]}],
}  # fmt: skip
BAD_POOLS = {
    # Refused by the argument spec (options of every list element).
    "unknown kind": (
        [*POOLS, {"name": "extra", "kind": "dynamik", "prefixes": ["100.66.0.0/16"]}],
        "Validation of arguments failed",
        "value of kind must be one of: dynamic, static, infrastructure, got: dynamik",
    ),
    "unknown field": (
        [*POOLS, {"name": "extra", "kind": "static", "prefixes": ["100.66.0.0/16"], "shdow": 1}],
        "Validation of arguments failed",
        "shdow",
    ),
    # Refused by the model, run on the controller host before the first write.
    "host bits": (
        [*POOLS, {"name": "extra", "kind": "static", "prefixes": ["100.66.0.1/16"]}],
        "Check the whole catalogue change",
        "pools[3] (extra).prefixes[0]: '100.66.0.1/16' has host bits set",
    ),
    # An exact duplicate stays an error when nested pools become legal.
    "duplicate prefix": (
        [*POOLS, {"name": "extra", "kind": "static", "prefixes": ["100.64.0.0/16"]}],
        "Check the whole catalogue change",
        "pools[3] (extra)",
    ),
    "pool naming a missing profile": (
        [*POOLS, {"name": "extra", "kind": "dynamic", "prefixes": ["100.66.0.0/16"],
                  "rate_limit": "premium"}],
        "Check the whole catalogue change",
        "pools[3] (extra).rate_limit: no rate-limit profile named 'premium'",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_POOLS)
def test_a_bad_catalogue_changes_nothing(tmp_path: Path, applied: Controller, case: str) -> None:
    pools, failing_task, message = BAD_POOLS[case]
    before, audit = applied.catalogue(), applied.audit()
    inventory = catalogue_inventory(applied, MORE["profiles"], MORE["relays"], pools)
    code, output = run_playbook(tmp_path, "catalogue.yml", inventory)
    assert code != 0, output
    assert failing_task in output, output
    assert message in output, output
    assert changed(output) == {"ctl": 0}, output
    assert applied.catalogue() == before
    assert applied.audit() == audit
    if case == "host bits":
        # Check mode runs the check too (it only reads), and fails the same way.
        code, output = run_playbook(tmp_path, "catalogue.yml", inventory, "--check")
        assert code != 0 and message in output, output


def test_a_good_change_is_applied_whole(tmp_path: Path, applied: Controller) -> None:
    # After the bad cases (pytest keeps file order): this one changes the catalogue.
    pools = [*POOLS[:2], {**POOLS[2], "state": "absent"}]
    inventory = catalogue_inventory(applied, MORE["profiles"], MORE["relays"], pools)
    code, output = run_playbook(tmp_path, "catalogue.yml", inventory)
    assert code == 0, output
    after = applied.catalogue()
    assert [p["name"] for p in after["pools"]] == ["dyn_v4", "dyn_v6"]
    assert [p["name"] for p in after["rate-limits"]] == ["business", "residential"]
    assert after["relays"][0]["prefixes"] == ["198.51.100.25", "198.51.100.26"]


# --- escalation policies from a file ---------------------------------------------

CONTROLLER_ROLE = ANSIBLE_DIR / "roles" / "edgectl_controller"
AGENT_ROLE = ANSIBLE_DIR / "roles" / "edgectl_agent"
POLICY = """
[[policy]]
name = "fbl"
mode = "{mode}"
window = 2592000
strikes = [{{source = "report", class = "spam"}}]
steps = [
  {{strike = 1, mode = "smtp", duration = 86400}},
  {{strike = 2, mode = "block", review = true}},
]
"""
# The second policy's window is refused: the whole file must be, the first too.
BAD_POLICIES = POLICY.format(mode="enforce").replace('"fbl"', '"first"') + POLICY.format(
    mode="enforce"
).replace("2592000", "0")
# `setpriv --reuid` as the service user is the converge test's (netns tier) to
# prove; here a stand-in on PATH records its arguments and runs the command.
SETPRIV = """#!/bin/sh
printf '%s\\n' "$*" >> "$SETPRIV_LOG"
while [ "$1" != "--" ]; do shift; done
shift
exec "$@"
"""


@dataclasses.dataclass
class PolicyHost:
    tmp_path: Path
    database: str
    source: Path
    dest: Path
    setpriv_log: Path

    def run(self, *extra: str, source: str | None = None) -> tuple[int, str]:
        playbook = self.tmp_path / "policies.yml"
        play = {
            "hosts": "ctl",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "The controller role's policy tasks",
                    "ansible.builtin.import_role": {
                        "name": str(CONTROLLER_ROLE),
                        "tasks_from": "policies.yml",
                    },
                }
            ],
        }
        playbook.write_text(yaml.safe_dump([play]))
        host = local_host(
            edgectl_controller_policies_file=str(self.source) if source is None else source,
            edgectl_controller_config_dir=str(self.dest.parent),
            edgectl_controller_venv=str(VENV_BIN.parent),
            edgectl_controller_user="edgectl-test",
            edgectl_controller_group=grp.getgrgid(os.getgid()).gr_name,
        )
        return run_playbook(
            self.tmp_path, str(playbook), {"edgectl_controller": {"hosts": {"ctl": host}}}, *extra
        )

    def policies(self) -> dict[str, str]:
        store = Store.open(self.database, migrate=False)
        try:
            return {p["name"]: p["mode"] for p in policies.listing(store)}
        finally:
            store.close()

    def audited(self) -> int:
        store = Store.open(self.database, migrate=False)
        try:
            return len(audit.listing(store, audit.AuditFilter(object_type="policy", limit=1000)))
        finally:
            store.close()

    def loads(self) -> list[str]:
        if not self.setpriv_log.exists():
            return []
        return self.setpriv_log.read_text().splitlines()


@pytest.fixture
def policy_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PolicyHost:
    if os.geteuid() != 0:
        # The role copies the file as owner root, as on a real host.
        pytest.skip("the policies file is installed owner root: needs root")
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    database = f"sqlite:///{tmp_path}/controller.db"
    config = config_dir / "controller.toml"
    config.write_text(f'[controller]\ndatabase_url = "{database}"\n')
    config.chmod(0o600)
    Store.open(database, migrate=True).close()
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "setpriv").write_text(SETPRIV)
    (shim / "setpriv").chmod(0o755)
    log = tmp_path / "setpriv.log"
    monkeypatch.setenv("PATH", f"{shim}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    monkeypatch.setenv("SETPRIV_LOG", str(log))
    source = tmp_path / "escalation.toml"
    source.write_text(POLICY.format(mode="propose"))
    return PolicyHost(tmp_path, database, source, config_dir / "policies.toml", log)


def test_policies_load_when_the_file_changed_and_only_then(policy_host: PolicyHost) -> None:
    code, output = policy_host.run()
    assert code == 0, output
    assert changed(output) == {"ctl": 2}, output  # the copy and the load
    assert policy_host.policies() == {"fbl": "propose"}
    info = policy_host.dest.stat()
    assert stat.S_IMODE(info.st_mode) == 0o640
    assert (info.st_uid, info.st_gid) == (0, os.getgid())
    [load] = policy_host.loads()
    assert load.startswith("--reuid=edgectl-test ")
    config = policy_host.dest.parent / "controller.toml"
    assert load.endswith(f"load-policies {policy_host.dest} --config {config}")
    audited = policy_host.audited()

    # Unchanged: no load, so no policy.update in the audit log run after run.
    code, output = policy_host.run()
    assert code == 0, output
    assert changed(output) == {"ctl": 0}, output
    assert len(policy_host.loads()) == 1 and policy_host.audited() == audited

    # Check mode says the copy would change and loads nothing.
    policy_host.source.write_text(POLICY.format(mode="enforce"))
    code, output = policy_host.run("--check")
    assert code == 0, output
    assert changed(output) == {"ctl": 1}, output
    assert policy_host.policies() == {"fbl": "propose"}
    assert 'mode = "propose"' in policy_host.dest.read_text()
    assert len(policy_host.loads()) == 1

    code, output = policy_host.run()
    assert code == 0, output
    assert changed(output) == {"ctl": 2}, output
    assert policy_host.policies() == {"fbl": "enforce"}


def test_a_refused_policies_file_loads_nothing_and_is_tried_again(
    policy_host: PolicyHost,
) -> None:
    policy_host.source.write_text(BAD_POLICIES)
    code, output = policy_host.run()
    assert code != 0, output
    assert "Stop on the policies the controller refused" in output, output
    assert "policy[1]" in output and "window" in output, output
    assert policy_host.policies() == {}
    # Gone again, so the next run does not find it unchanged and skip the load.
    assert not policy_host.dest.exists()
    policy_host.source.write_text(POLICY.format(mode="propose"))
    code, output = policy_host.run()
    assert code == 0, output
    assert policy_host.policies() == {"fbl": "propose"}


def test_a_json_policies_file_is_loaded_as_json(policy_host: PolicyHost) -> None:
    source = policy_host.tmp_path / "escalation.json"
    fbl = {
        "name": "json-fbl",
        "mode": "dry-run",
        "window": 3600,
        "strikes": [{"source": "report", "class": "phishing"}],
        "steps": [{"strike": 1, "mode": "smtp", "duration": 3600}],
    }
    document = {"policy": [fbl]}
    source.write_text(json.dumps(document))
    code, output = policy_host.run(source=str(source))
    assert code == 0, output
    assert (policy_host.dest.parent / "policies.json").exists()
    assert policy_host.policies() == {"json-fbl": "dry-run"}


def test_no_policies_file_leaves_the_policies_alone(policy_host: PolicyHost) -> None:
    code, output = policy_host.run(source="")
    assert code == 0, output
    assert changed(output) == {"ctl": 0}, output
    assert not policy_host.dest.exists() and policy_host.loads() == []


def test_the_role_loads_policies_after_the_migration_and_documents_the_file() -> None:
    with (CONTROLLER_ROLE / "tasks" / "main.yml").open() as file:
        tasks = yaml.safe_load(file)
    names = [t.get("name") for t in tasks]
    migrate = names.index("Bring the database to the latest schema")
    [imported] = [i for i, t in enumerate(tasks) if t.get("ansible.builtin.import_tasks")]
    assert tasks[imported]["ansible.builtin.import_tasks"] == "policies.yml"
    assert imported > migrate  # the policy tables exist only after the migration
    option = _spec("edgectl_controller")["main"]["options"]["edgectl_controller_policies_file"]
    with (CONTROLLER_ROLE / "defaults" / "main.yml").open() as file:
        defaults = yaml.safe_load(file)
    assert option["default"] == defaults["edgectl_controller_policies_file"] == ""


# --- the agent role's argument validation ---------------------------------------


def gateway_inventory(**variables: Any) -> dict[str, Any]:
    given = {
        "edgectl_agent_register": False,
        "edgectl_agent_token": "from-vault",
        "edgectl_agent_controller_url": "https://controller.isp.example:8470",
        **variables,
    }
    host = local_host(**given)
    # No edgectl_controller group at all: registration is off.
    return {"edgectl_gateways": {"hosts": {"gw-1": host}}}


def validate_gateway(tmp_path: Path, inventory: dict[str, Any]) -> tuple[int, str]:
    return run_playbook(tmp_path, "gateways.yml", inventory, "--tags", VALIDATE_ONLY)


def test_agent_role_validates_without_a_controller_group(tmp_path: Path) -> None:
    code, output = validate_gateway(tmp_path, gateway_inventory())
    assert code == 0, output
    # Only argument validation ran: the agent role's, and the shared install
    # role's on the paths and version the agent role hands it.
    tasks = re.findall(r"^TASK \[(\S+) : (.*?)\]", output, re.M)
    assert {role for role, _ in tasks} == {"edgectl_agent", "edgectl_install"}, output
    assert all(name.startswith("Validating arguments") for _, name in tasks), output


def test_agent_role_validation_refuses_a_missing_controller_url(tmp_path: Path) -> None:
    inventory = gateway_inventory()
    del inventory["edgectl_gateways"]["hosts"]["gw-1"]["edgectl_agent_controller_url"]
    code, output = validate_gateway(tmp_path, inventory)
    assert code != 0, output
    assert "missing required arguments: edgectl_agent_controller_url" in output, output


def test_agent_role_registration_needs_an_api_host(tmp_path: Path) -> None:
    # Registration on, but no controller group and no edgectl_agent_api_host:
    # the role's input check says so before anything is installed.
    inventory = gateway_inventory(edgectl_agent_register=True)
    code, output = run_playbook(tmp_path, "gateways.yml", inventory, "--check")
    assert code != 0, output
    assert "Check the role's inputs" in output, output
    assert "edgectl_agent_api_host" in output, output
    assert changed(output) == {"gw-1": 0}, output


def _spec(role: str) -> dict[str, Any]:
    with (ANSIBLE_DIR / "roles" / role / "meta" / "argument_specs.yml").open() as file:
        specs: dict[str, Any] = yaml.safe_load(file)["argument_specs"]
    return specs


def test_every_gateway_setting_of_the_dataplane_is_an_inventory_option() -> None:
    options = _spec("edgectl_agent")["main"]["options"]["edgectl_agent_gateway_settings"]["options"]
    assert set(options) == {f.name for f in dataclasses.fields(GatewaySettings)}


@pytest.mark.parametrize(
    "settings",
    [
        {"hooks": ["forward", "sideways"]},
        {"block_action": "reject"},
        {"track_non_mail": "maybe"},
        {"mail_ports": ["smtp"]},
        {"log_grup": 25},
    ],
)
def test_gateway_settings_are_validated(tmp_path: Path, settings: dict[str, Any]) -> None:
    code, output = validate_gateway(
        tmp_path, gateway_inventory(edgectl_agent_gateway_settings=settings)
    )
    assert code != 0, output
    assert "Validation of arguments failed" in output, output


def test_every_gateway_setting_passes_validation(tmp_path: Path) -> None:
    settings = {
        "hooks": ["forward", "output"],
        "block_action": "drop",
        "mail_ports": [25, 465, 587, 2525],
        "op25b_ports": [25, 2525],
        "log_group": 25,
        "log_per_second": 20,
        "resolvers": ["198.51.100.53/32"],
        "portal": ["198.51.100.80/32"],
        "meter_size": 131072,
        "track_non_mail": False,
        # Argument validation only: the controller refuses steering without
        # conntrack, the role's spec checks the shapes.
        "steer_http_4": "198.51.100.80",
        "steer_http_6": "2001:db8:eeee:80::80",
        "steer_http_port": 8080,
        "garden_allow": [{"prefix": "203.0.113.64/27", "ports": [80, 443]}],
    }
    assert set(settings) == {f.name for f in dataclasses.fields(GatewaySettings)}
    code, output = validate_gateway(
        tmp_path, gateway_inventory(edgectl_agent_gateway_settings=settings)
    )
    assert code == 0, output


# --- the agent's controller URLs ---------------------------------------------------


def _render_agent_config(tmp_path: Path, gateway: str, urls: list[str]) -> str:
    """The agent role's agent.toml.j2 for ``gateway``, rendered by Ansible itself."""
    out = tmp_path / f"{gateway}.toml"
    play = tmp_path / f"render-{gateway}.yml"
    play.write_text(
        yaml.safe_dump(
            [
                {
                    "hosts": "all",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "ansible.builtin.template": {
                                "src": str(AGENT_ROLE / "templates" / "agent.toml.j2"),
                                "dest": str(out),
                                "mode": "0600",
                            }
                        }
                    ],
                }
            ]
        )
    )
    host = local_host(
        edgectl_agent_gateway=gateway,
        edgectl_agent_controller_url="https://ctl-1.isp.example:8470",
        edgectl_agent_controller_urls=urls,
        edgectl_agent_config_dir="/etc/edgectl",
        edgectl_agent_state_dir="/var/lib/edgectl/agent",
        edgectl_agent_ca_cert="",
        edgectl_agent_allow_plain_http=False,
        edgectl_agent_metrics_listen="127.0.0.1:9471",
        edgectl_agent_settings={},
    )
    code, output = run_playbook(tmp_path, str(play), {"all": {"hosts": {gateway: host}}})
    assert code == 0, output
    return out.read_text()


def test_agents_get_every_controller_rotated_per_gateway(tmp_path: Path) -> None:
    from edgectl.agent.daemon.config import parse

    urls = ["https://ctl-1.isp.example:8470", "https://ctl-2.isp.example:8470"]
    firsts = set()
    for gateway in ("gw-tyo-1", "gw-tyo-2", "gw-tyo-7", "gw-tyo-8"):
        config = parse(tomllib.loads(_render_agent_config(tmp_path, gateway, urls)))
        # Every controller, in the list's order from a per-gateway start.
        start = int(hashlib.sha1(gateway.encode()).hexdigest()[:8], 16) % len(urls)
        assert config.urls == tuple(urls[start:] + urls[:start])
        firsts.add(config.urls[0])
    assert firsts == set(urls)  # the fleet spreads over both
    single = parse(tomllib.loads(_render_agent_config(tmp_path, "gw-one", [])))
    assert single.urls == ("https://ctl-1.isp.example:8470",)


# --- a rolling restart waits for each controller ---------------------------------

ROLLING = """
- name: A rolling change of the controllers, one host at a time
  hosts: edgectl_controller
  gather_facts: false
  serial: 1
  tasks:
    - name: The role's handlers (its policies tasks do nothing without a file)
      ansible.builtin.import_role:
        name: edgectl_controller
        tasks_from: policies
    - name: A change that restarts the controller (the restart itself needs systemd)
      ansible.builtin.debug:
        msg: restarted
      changed_when: true
      notify: Wait for the restarted controller to answer
"""


def _rolling(tmp_path: Path, urls: dict[str, str]) -> tuple[int, str, float]:
    play = tmp_path / "rolling.yml"
    play.write_text(ROLLING)
    hosts = {
        name: local_host(
            edgectl_controller_api_url=url,
            edgectl_controller_api_wait=4,
            edgectl_controller_manage_service=True,
        )
        for name, url in urls.items()
    }
    started = time.monotonic()
    code, output = run_playbook(tmp_path, str(play), {"edgectl_controller": {"hosts": hosts}})
    return code, output, time.monotonic() - started


def test_a_restart_waits_for_healthz_before_the_next_controller_host(
    tmp_path: Path, controller: Controller
) -> None:
    up = controller.base_url
    code, output, _ = _rolling(tmp_path, {"ctl-1": up, "ctl-2": up})
    assert code == 0, output
    waits = [
        (m["host"], m.start())
        for m in re.finditer(
            r"RUNNING HANDLER \[edgectl_controller : Wait until the controller answers /healthz\]"
            r"[^\n]*\nok: \[(?P<host>ctl-\d)\]",
            output,
        )
    ]
    assert [host for host, _ in waits] == ["ctl-1", "ctl-2"], output
    # ctl-1 answered before anything was done to ctl-2.
    assert waits[0][1] < output.index("changed: [ctl-2]"), output


def test_a_controller_that_does_not_come_back_stops_the_rolling_restart(
    tmp_path: Path, controller: Controller
) -> None:
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    code, output, took = _rolling(tmp_path, {"ctl-1": down, "ctl-2": controller.base_url})
    assert code != 0, output
    assert "fatal: [ctl-1]" in output, output
    assert "ctl-2" not in output.split("PLAY RECAP")[0], output  # never touched
    assert took < 60, f"the wait is bounded by edgectl_controller_api_wait: {took:.0f} s"
