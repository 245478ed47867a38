"""The roles refuse a bad inventory before they change anything.

Fast checks of ``ansible/`` that need no root and no SSH (the converge over
SSH is ``netns-tests/test_ansible_converge.py``): the shipped playbooks run
with ``ansible-playbook`` against this machine over a local connection.

* ``catalogue.yml`` runs for real against a controller served on 127.0.0.1
  (SQLite in a temporary directory): a good catalogue is applied and a
  second run changes nothing; a bad one fails and leaves the controller's
  catalogue and audit log exactly as they were.
* ``gateways.yml`` runs with a tag nothing carries, so only the role's
  argument validation (tagged ``always``) runs: what the inventory must
  give, and what it need not, is decided there and nowhere later.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgectl.lab.probe import wait_until
from edgectl.model import GatewaySettings

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


@dataclasses.dataclass
class Controller:
    url: str
    token: str

    def get(self, path: str) -> Any:
        request = urllib.request.Request(
            self.url + path, headers={"Authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def catalogue(self) -> dict[str, Any]:
        return {p: self.get(f"/v1/{p}") for p in ("rate-limits", "relays", "pools")}

    def audit(self) -> list[Any]:
        entries: list[Any] = self.get("/v1/audit")
        return entries

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    tmp_path = tmp_path_factory.mktemp("controller")
    port = _free_port()
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
    log = (tmp_path / "controller.log").open("wb")
    server = subprocess.Popen(
        [*edgectl, "controller", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    found = Controller(f"http://127.0.0.1:{port}", made.stdout.strip())
    try:
        assert wait_until(found.healthy, timeout=30, interval=0.05), (
            tmp_path / "controller.log"
        ).read_text()
        yield found
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


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
        edgectl_controller_api_url=controller.url,
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
