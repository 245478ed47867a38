"""The abuse desk's CLI verbs against a live controller (uvicorn on 127.0.0.1).

The verbs run in-process through ``edgectl.cli.main`` (interpreter start-ups
are slow on a busy box), but every call crosses real HTTP to a real server;
one test runs the installed ``edgectl`` script to prove the entry point and
its exit code.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from ctl_server import Server, running

from edgectl.cli import main
from edgectl.controller.auth import Role
from edgectl.controller.store import Store, tokens
from edgectl.testing.wait import wait_until


@dataclass
class Desk:
    server: Server
    tokens: dict[str, str]
    server_db: str = ""

    def api(self, role: str) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"}
        return httpx.Client(base_url=self.server.base, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    tmp = tmp_path_factory.mktemp("client-cli")
    # The escalation engine passes often, so the proposals test waits briefly.
    with running(tmp, escalation_interval=0.2) as server:
        store = Store.open(f"sqlite:///{tmp / 'controller.db'}", migrate=False)
        try:
            made = {
                r.value: tokens.create(store, f"{r.value}-person", r)
                for r in (Role.ABUSE, Role.VIEWER)
            }
        finally:
            store.close()
        desk = Desk(server, {"netops": server.token, **made}, str(tmp / "controller.db"))
        with desk.api("netops") as netops:
            pool = {"name": "dyn", "kind": "dynamic", "prefixes": ["100.64.0.0/16"]}
            assert netops.post("/v1/pools", json=pool).status_code == 201
            assert (
                netops.post("/v1/gateways", json={"name": "gw-1", "pools": ["dyn"]}).status_code
                == 201
            )
            for n in range(1, 6):
                put = netops.put(f"/v1/accounts/cust-{n}/session", json={"ipv4": f"100.64.0.{n}"})
                assert put.status_code == 200, put.text
        yield desk


@dataclass
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def cli(
    desk: Desk, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> Any:
    # No config file of the tester's own may leak in.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("EDGECTL_CLIENT_CONFIG", raising=False)
    monkeypatch.setenv("EDGECTL_URL", desk.server.base)

    def run(*argv: str, role: str | None = "abuse") -> Ran:
        if role is None:
            monkeypatch.delenv("EDGECTL_TOKEN", raising=False)
        else:
            monkeypatch.setenv("EDGECTL_TOKEN", desk.tokens[role])
        capsys.readouterr()
        try:
            code = main(list(argv))
        except SystemExit as exit_:  # argparse's usage errors
            code = int(exit_.code or 0)
        captured = capsys.readouterr()
        return Ran(code, captured.out, captured.err)

    return run


def test_who_now_at_and_nobody(cli: Any, desk: Desk) -> None:
    ran = cli("who", "100.64.0.1")
    assert ran.code == 0, ran.err
    assert "cust-1" in ran.out and "ACCOUNT" in ran.out
    as_json = cli("who", "100.64.0.1", "-o", "json").json()
    with desk.api("viewer") as viewer:
        assert as_json == viewer.get("/v1/accounts", params={"address": "100.64.0.1"}).json()
    at = cli("who", "100.64.0.2", "--at", "-0s", "-o", "json")
    assert at.code == 0, at.err
    assert at.json()[0]["account"] == "cust-2"
    assert at.json()[0]["interval"]["address"] == "100.64.0.2"
    # The session started a moment ago: an hour back, nobody held it.
    earlier = cli("who", "100.64.0.2", "--at", "-1h")
    assert earlier.code == 1 and "nobody held 100.64.0.2" in earlier.err
    nobody = cli("who", "100.64.200.200")
    assert nobody.code == 1 and "nobody held" in nobody.err


def test_usage_errors_exit_2(cli: Any) -> None:
    bad_time = cli("who", "100.64.0.1", "--at", "yesterday")
    assert bad_time.code == 2 and "--at" in bad_time.err
    no_reason = cli("quarantine", "add", "cust-1", "--mode", "smtp")
    assert no_reason.code == 2 and "--reason" in no_reason.err
    two_targets = cli(
        "quarantine", "add", "cust-1", "--address", "100.64.0.1", "--mode", "smtp", "--reason", "r"
    )
    assert two_targets.code == 2 and "exactly one" in two_targets.err
    bad_duration = cli(
        "quarantine", "add", "cust-1", "--mode", "smtp", "--reason", "r", "--duration", "soon"
    )
    assert bad_duration.code == 2 and "--duration" in bad_duration.err
    no_token = cli("gateways", role=None)
    assert no_token.code == 2 and "EDGECTL_TOKEN" in no_token.err


def test_quarantine_lifecycle(cli: Any, desk: Desk) -> None:
    added = cli(
        "quarantine",
        "add",
        "cust-3",
        "--mode",
        "smtp",
        "--reason",
        "spam run",
        "--ticket",
        "AB-1",
        "--duration",
        "90m",
    )
    assert added.code == 0, added.err
    assert "created quarantine" in added.out and "AB-1" in added.out
    again = cli(
        "quarantine",
        "add",
        "--address",
        "100.64.0.3",
        "--at",
        "-0s",
        "--mode",
        "block",
        "--reason",
        "still at it",
        "--ticket",
        "AB-2",
        "-o",
        "json",
    )
    assert again.code == 0, again.err
    outcome = again.json()
    assert outcome["outcome"] == "updated" and outcome["resolved"]["account"] == "cust-3"
    ident = outcome["quarantine"]["id"]
    assert outcome["quarantine"]["mode"] == "block"

    # An update replaces the hold's fields, the ticket too.
    listed = cli("quarantine", "list", "--ticket", "AB-2", "-o", "json").json()
    with desk.api("viewer") as viewer:
        api = viewer.get("/v1/quarantines", params={"ticket": "AB-2"}).json()
    assert listed == api and [q["id"] for q in listed] == [ident]
    by_mode = cli(
        "quarantine", "list", "--mode", "block", "--actor", "token:abuse-person", "-o", "json"
    ).json()
    assert ident in [q["id"] for q in by_mode]
    assert (
        cli("quarantine", "list", "--mode", "smtp", "--account", "cust-3", "-o", "json").json()
        == []
    )
    shown = cli("quarantine", "show", str(ident))
    assert shown.code == 0 and "still at it" in shown.out

    lifted = cli("quarantine", "lift", str(ident), "--reason", "cleaned up")
    assert lifted.code == 0 and f"lifted quarantine {ident}" in lifted.out
    twice = cli("quarantine", "lift", str(ident), "--reason", "again")
    assert twice.code == 1 and twice.err.startswith("edgectl: 409")
    missing = cli("quarantine", "show", "999999")
    assert missing.code == 1 and "404" in missing.err


def test_refusals_name_the_field_and_the_role(cli: Any) -> None:
    bad = cli("quarantine", "add", "no/such", "--mode", "smtp", "--reason", "r")
    assert bad.code == 1 and "422" in bad.err and "account" in bad.err
    viewer = cli("quarantine", "add", "cust-4", "--mode", "smtp", "--reason", "r", role="viewer")
    assert viewer.code == 1 and "403" in viewer.err and "viewer" in viewer.err
    kind = cli("offenders", "--kind", "nonsense")
    assert kind.code == 1 and "kind" in kind.err


def test_bulk_from_file_all_or_nothing(cli: Any, tmp_path: Path) -> None:
    good = tmp_path / "botnet.txt"
    good.write_text("# feed 2026-12-01\nbot-1\nbot-2\n\nbot-3  # third\n")
    first = cli(
        "quarantine",
        "add",
        "--from-file",
        str(good),
        "--mode",
        "smtp",
        "--reason",
        "botnet",
        "--ticket",
        "BOT-7",
    )
    assert first.code == 0, first.err
    assert first.out.strip() == "created 3, updated 0"
    second = cli(
        "quarantine",
        "add",
        "--from-file",
        str(good),
        "--mode",
        "block",
        "--reason",
        "botnet",
        "-o",
        "json",
    )
    assert second.json() == {"created": 0, "updated": 3}
    bad = tmp_path / "bad.txt"
    bad.write_text("bot-9\nnot valid\n")
    refused = cli("quarantine", "add", "--from-file", str(bad), "--mode", "smtp", "--reason", "x")
    assert refused.code == 1 and "accounts" in refused.err
    assert (
        cli("quarantine", "list", "--account", "bot-9", "--state", "all", "-o", "json").json() == []
    )


def test_exemptions(cli: Any) -> None:
    added = cli(
        "exempt",
        "add",
        "cust-5",
        "--ticket",
        "EX-1",
        "--reason",
        "own MX",
        "--duration",
        "7d",
        "-o",
        "json",
    )
    assert added.code == 0, added.err
    ident = added.json()["id"]
    listed = cli("exempt", "list", "--account", "cust-5")
    assert listed.code == 0 and "EX-1" in listed.out
    lifted = cli("exempt", "lift", str(ident), "--reason", "moved to relay")
    assert lifted.code == 0 and f"lifted exemption {ident}" in lifted.out
    no_ticket = cli("exempt", "add", "cust-5", "--reason", "r")
    assert no_ticket.code == 2


def test_account_show(cli: Any, desk: Desk) -> None:
    cli("quarantine", "add", "cust-2", "--mode", "smtp", "--reason", "for history")
    shown = cli("account", "show", "cust-2")
    assert shown.code == 0, shown.err
    assert "100.64.0.2" in shown.out and "quarantines (1)" in shown.out
    assert "for history" in shown.out
    as_json = cli("account", "show", "cust-2", "-o", "json").json()
    with desk.api("viewer") as viewer:
        assert as_json == viewer.get("/v1/accounts/cust-2/history").json()


def test_gateways_offenders_audit(cli: Any) -> None:
    shown = cli("gateways")
    assert shown.code == 0 and "gw-1" in shown.out and "WANTED" in shown.out
    document = cli("gateways", "-o", "json").json()
    assert document[0]["name"] == "gw-1"
    assert document[0]["convergence"]["applied_revision"] is None
    offenders = cli("offenders", "-o", "json")
    assert offenders.code == 0 and offenders.json() == []
    unknown = cli("offenders", "--gateway", "gw-nope")
    assert unknown.code == 1 and "404" in unknown.err
    cli("quarantine", "add", "cust-1", "--mode", "smtp", "--reason", "for the audit")
    trail = cli(
        "audit",
        "--actor",
        "token:abuse-person",
        "--object",
        "quarantine",
        "--since",
        "-1h",
        "-o",
        "json",
    ).json()
    assert trail and all(e["actor"] == "token:abuse-person" for e in trail)
    assert "for the audit" in [e["reason"] for e in trail]
    table = cli("audit", "--action", "quarantine.create", "--limit", "1000")
    assert table.code == 0 and "quarantine.create" in table.out


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_unreachable_and_tls_failure_exit_3(cli: Any, desk: Desk, tmp_path: Path) -> None:
    down = cli("gateways", "--controller", f"http://127.0.0.1:{_closed_port()}")
    assert down.code == 3 and "cannot reach" in down.err
    # TLS to a plain-HTTP server: the handshake fails.
    tls = cli("gateways", "--controller", f"https://127.0.0.1:{desk.server.port}")
    assert tls.code == 3, tls.err
    missing_ca = cli("gateways", "--ca-file", str(tmp_path / "none.pem"))
    assert missing_ca.code == 2 and "--ca-file" in missing_ca.err


def test_config_file_permissions(
    cli: Any, desk: Desk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "client.toml"
    config.write_text(f'[client]\nurl = "{desk.server.base}"\ntoken = "{desk.tokens["viewer"]}"\n')
    config.chmod(0o644)
    monkeypatch.delenv("EDGECTL_URL")
    refused = cli("gateways", "--client-config", str(config), role=None)
    assert refused.code == 2 and "chmod 600" in refused.err
    config.chmod(0o600)
    allowed = cli("gateways", "--client-config", str(config), role=None)
    assert allowed.code == 0, allowed.err
    assert "gw-1" in allowed.out
    # The default place, ~/.config/edgectl/client.toml (here under XDG_CONFIG_HOME).
    default = tmp_path / "xdg" / "edgectl" / "client.toml"
    default.parent.mkdir(parents=True)
    default.write_text(config.read_text())
    default.chmod(0o640)
    assert cli("gateways", role=None).code == 2
    default.chmod(0o600)
    assert cli("gateways", role=None).code == 0


def test_installed_entry_point(desk: Desk) -> None:
    script = Path(sys.executable).with_name("edgectl")
    env = {**os.environ, "EDGECTL_URL": desk.server.base, "EDGECTL_TOKEN": desk.tokens["viewer"]}
    done = subprocess.run(
        [str(script), "who", "100.64.0.4", "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["account"] == "cust-4"
    refused = subprocess.run(
        [str(script), "who", "100.64.99.99"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 1 and "nobody held" in refused.stderr


def test_tls_with_a_private_ca(tmp_path: Path, cli: Any, desk: Desk) -> None:
    """A controller serving TLS with a self-signed certificate: refused (exit 3)
    until --ca-file names it, then verified and answered."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    # The module's database, served a second time over TLS (SQLite, WAL: both can read).
    database = Path(desk.server_db)
    port = _closed_port()
    config = tmp_path / "tls.toml"
    config.write_text(
        f'[controller]\ndatabase_url = "sqlite:///{database}"\nport = {port}\n'
        f'tls_certfile = "{cert}"\ntls_keyfile = "{key}"\n'
    )
    log = (tmp_path / "tls.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "edgectl.controller", "controller", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"https://127.0.0.1:{port}"
    trust = ssl.create_default_context(cafile=str(cert))
    try:

        def healthy() -> bool:
            assert server.poll() is None, (tmp_path / "tls.log").read_text()
            try:
                return httpx.get(f"{base}/healthz", verify=trust, timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, timeout=30, what="TLS controller did not come up", interval=0.05)
        untrusted = cli("gateways", "--controller", base)
        assert untrusted.code == 3 and "TLS" in untrusted.err, untrusted.err
        trusted = cli("gateways", "--controller", base, "--ca-file", str(cert), "-o", "json")
        assert trusted.code == 0, trusted.err
        assert [g["name"] for g in trusted.json()] == ["gw-1"]
    finally:
        server.terminate()
        server.wait(timeout=15)
        log.close()


def test_prefix_and_expires(cli: Any) -> None:
    later = cli(
        "quarantine",
        "add",
        "--prefix",
        "100.64.7.7",
        "--mode",
        "block",
        "--reason",
        "unassigned space scanning",
        "--expires",
        "2099-01-01T00:00:00Z",
        "-o",
        "json",
    )
    assert later.code == 0, later.err
    hold = later.json()["quarantine"]
    assert hold["prefix"] == "100.64.7.7" and hold["account"] is None
    assert hold["expires_at"].startswith("2099-01-01T00:00:00")
    listed = cli("quarantine", "list", "--prefix", "100.64.7.7")
    assert listed.code == 0 and "unassigned space scanning" in listed.out
    past = cli(
        "quarantine",
        "add",
        "cust-4",
        "--mode",
        "smtp",
        "--reason",
        "r",
        "--expires",
        "2001-01-01T00:00:00Z",
    )
    assert past.code == 1 and "expires" in past.err
    both = cli(
        "quarantine",
        "add",
        "cust-4",
        "--mode",
        "smtp",
        "--reason",
        "r",
        "--expires",
        "-1h",
        "--duration",
        "1h",
    )
    assert both.code == 2 and "not both" in both.err
    naive = cli(
        "quarantine",
        "add",
        "cust-4",
        "--mode",
        "smtp",
        "--reason",
        "r",
        "--expires",
        "2099-01-01T00:00:00",
    )
    assert naive.code == 2 and "needs a zone" in naive.err


LADDER = {
    "mode": "propose",
    "strikes": [{"source": "report", "class": "spam"}],
    "steps": [
        # smtp, not walled-garden: gw-1 has no portal, and the controller refuses
        # a walled garden there.
        {"strike": 1, "mode": "smtp", "duration": 86_400},
        {"strike": 2, "mode": "block", "review": True},
    ],
    "window": 30 * 86_400,
}


def test_proposals_and_policies(cli: Any, desk: Desk) -> None:
    """A policy in propose mode, three spam reports, the running engine files three
    proposals; the desk lists, approves and rejects them, and replays the policy."""
    accounts = ["cust-6", "cust-7", "cust-8"]
    with desk.api("netops") as netops, desk.api("abuse") as abuse:
        put = netops.put("/v1/policies/cli-ladder", json=LADDER)
        assert put.status_code == 201, put.text
        for n, account in enumerate(accounts, start=6):
            bound = netops.put(f"/v1/accounts/{account}/session", json={"ipv4": f"100.64.0.{n}"})
            assert bound.status_code == 200, bound.text
        # Reported after the sessions began, so each is attributed to its account.
        when = datetime.now(UTC).isoformat()
        rows = "".join(f"100.64.0.{n},{when},spam,cli-{n}\n" for n in range(6, 9))
        posted = abuse.post(
            "/v1/reports",
            content="address,time,class,message_id\n" + rows,
            headers={"Content-Type": "text/csv"},
        )
        assert posted.status_code == 200, posted.text

        def filed() -> bool:
            found = abuse.get("/v1/proposals", params={"policy": "cli-ladder"}).json()
            return len(found) == len(accounts)

        wait_until(filed, timeout=30, what="the engine filed no proposals", interval=0.1)
        api_list = abuse.get("/v1/proposals", params={"policy": "cli-ladder"}).json()

    listed = cli("proposals", "list", "--policy", "cli-ladder")
    assert listed.code == 0, listed.err
    assert "WHY" in listed.out and all(a in listed.out for a in accounts)
    as_json = cli("proposals", "list", "--policy", "cli-ladder", "-o", "json")
    assert as_json.json() == api_list
    by_account = {p["account"]: p["id"] for p in api_list}
    first, second, third = (by_account[a] for a in accounts)
    assert cli("proposals", "list", "--state", "maybe").code == 2
    assert cli("proposals", "list", "--policy", "other", "-o", "json").json() == []

    approved = cli("proposals", "approve", str(first), "--reason", "confirmed", "-o", "json")
    assert approved.code == 0, approved.err
    document = approved.json()
    assert document["id"] == first and document["state"] == "approved"
    assert document["decided_by"] == "token:abuse-person"
    assert isinstance(document["quarantine"], int)

    # All or none: one of the ids is decided already, so the other stays pending.
    mixed = cli("proposals", "approve", str(second), str(first), "--reason", "batch")
    assert mixed.code == 1, mixed.err
    assert "409" in mixed.err and f"proposal {first} is already approved" in mixed.err
    pending = cli("proposals", "list", "--policy", "cli-ladder", "-o", "json").json()
    assert sorted(p["id"] for p in pending) == sorted([second, third])

    # The API refuses an empty reason and names the field.
    empty = cli("proposals", "reject", str(second), "--reason", "")
    assert empty.code == 1 and "422" in empty.err and "reason" in empty.err, empty.err
    assert cli("proposals", "reject", str(second)).code == 2  # --reason is required

    rejected = cli("proposals", "reject", str(second), str(third), "--reason", "false positive")
    assert rejected.code == 0, rejected.err
    assert rejected.out.startswith("rejected 2 proposals\n")
    assert cli("proposals", "list", "--policy", "cli-ladder", "-o", "json").json() == []
    decided = cli("proposals", "list", "--state", "rejected", "-o", "json").json()
    assert sorted(p["id"] for p in decided) == sorted([second, third])
    everything = cli("proposals", "list", "--state", "all", "--policy", "cli-ladder", "-o", "json")
    assert {p["state"] for p in everything.json()} == {"approved", "rejected"}
    viewer = cli("proposals", "approve", str(third), "--reason", "r", role="viewer")
    assert viewer.code == 1 and "403" in viewer.err

    policies = cli("policies", "list")
    assert policies.code == 0 and "cli-ladder" in policies.out and "report spam" in policies.out
    with desk.api("viewer") as viewer_api:
        assert cli("policies", "list", "-o", "json").json() == viewer_api.get("/v1/policies").json()
    shown = cli("policies", "show", "cli-ladder")
    assert shown.code == 0, shown.err
    assert "smtp" in shown.out and "block" in shown.out and "propose" in shown.out
    assert cli("policies", "show", "cli-ladder", "-o", "json").json()["window"] == 30 * 86_400
    missing = cli("policies", "show", "no-such")
    assert missing.code == 1 and "404" in missing.err

    replay = cli("policies", "replay", "cli-ladder", "--since", "-1h", "--until", "-0s")
    assert replay.code == 0, replay.err
    assert "strikes 3 on 3 accounts" in replay.out
    assert "cust-6,cust-7,cust-8" in replay.out
    result = cli(
        "policies", "replay", "cli-ladder", "--since", "-1h", "--until", "-0s", "-o", "json"
    ).json()
    assert [s["count"] for s in result["steps"]] == [3, 0]
    assert result["steps"][0]["accounts"] == accounts
    backwards = cli("policies", "replay", "cli-ladder", "--since", "-0s", "--until", "-1h")
    assert backwards.code == 1 and "422" in backwards.err and "until" in backwards.err
    garbled = cli("policies", "replay", "cli-ladder", "--since", "last week", "--until", "-0s")
    assert garbled.code == 2 and "--since" in garbled.err
