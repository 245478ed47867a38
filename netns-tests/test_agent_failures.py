"""The agent when things go wrong: drift, crashes, a rewound controller, bad state files.

Same system as test_agent_system.py (controller + two agent processes over
real HTTP, two lab gateways), in its own module so its destructive steps
never share processes with the happy paths.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from agent_fixtures import (
    DYN4_A,
    DYN4_B,
    Site,
    System,
    agent_cli,
    has_table,
    mail,
    missing_keys,
    nft,
    outcome_becomes,
)

from edgectl.agent.persist import StateStore
from edgectl.lab.probe import Outcome
from edgectl.testing.wait import wait_until

REFUSED = Outcome.RESET
REPAIR_BUDGET = 5.0  # issue 4: drift repaired within 5 s


def _repairs(system: System, gateway: str) -> float:
    return system.sites[gateway].agent.metric("edgectl_agent_drift_repairs_total") or 0.0


def test_flush_ruleset_is_repaired_within_5s(clean: System) -> None:
    clean.session("alice", ipv4=DYN4_A)
    clean.quarantine("alice")
    site = clean.sites["gw-a"]
    assert outcome_becomes(site, DYN4_A, REFUSED)
    before = _repairs(clean, "gw-a")
    nft(site, "flush", "ruleset")
    flushed = time.monotonic()
    assert wait_until(
        lambda: has_table(site) and mail(site, DYN4_A) is REFUSED, REPAIR_BUDGET, 0.05
    )
    took = time.monotonic() - flushed
    assert took < REPAIR_BUDGET
    assert wait_until(lambda: _repairs(clean, "gw-a") == before + 1, 2)
    assert "drift in table inet edgectl" in site.agent.logs()
    # The other gateway was never touched and never repaired.
    assert mail(clean.sites["gw-b"], DYN4_A) is REFUSED


def test_deleted_element_is_repaired_within_5s(clean: System) -> None:
    clean.session("alice", ipv4=DYN4_A)
    clean.quarantine("alice")
    site = clean.sites["gw-b"]
    assert outcome_becomes(site, DYN4_A, REFUSED)
    before = _repairs(clean, "gw-b")
    nft(site, "delete", "element", "inet", "edgectl", "q_smtp_4", "{", DYN4_A, "}")
    assert wait_until(lambda: missing_keys(site, "q_smtp_4", [DYN4_A]) == 0, REPAIR_BUDGET, 0.05)
    assert mail(site, DYN4_A) is REFUSED
    assert wait_until(lambda: _repairs(clean, "gw-b") == before + 1, 2)


def test_foreign_commit_elsewhere_is_not_a_repair(clean: System) -> None:
    site = clean.sites["gw-a"]
    agent = site.agent
    repairs = _repairs(clean, "gw-a")
    checks = agent.metric("edgectl_agent_drift_checks_total") or 0.0
    nft(site, "add", "table", "inet", "othertool")
    try:
        # The agent looked (the generation moved) but found its table intact.
        assert wait_until(
            lambda: (agent.metric("edgectl_agent_drift_checks_total") or 0) > checks, 5
        )
        assert _repairs(clean, "gw-a") == repairs
    finally:
        nft(site, "delete", "table", "inet", "othertool")


def test_sigterm_leaves_the_table_and_only_decommission_removes_it(clean: System) -> None:
    clean.session("alice", ipv4=DYN4_A)
    clean.quarantine("alice")
    site = clean.sites["gw-a"]
    assert outcome_becomes(site, DYN4_A, REFUSED)
    assert site.agent.terminate() == 0
    assert has_table(site)
    assert mail(site, DYN4_A) is REFUSED  # still enforced with no agent at all
    # Decommission under a running agent is refused: it would put the table back.
    other = clean.sites["gw-b"]
    refused = agent_cli(other.agent, "decommission")
    assert refused.returncode == 2 and "stop it first" in refused.stderr
    assert has_table(other)
    done = agent_cli(site.agent, "decommission")
    assert done.returncode == 0, done.stderr
    assert "deleted table inet edgectl" in done.stdout
    assert not has_table(site)
    assert not (site.agent.state_dir / "applied.json").exists()
    assert not (site.agent.state_dir / "journal.jsonl").exists()
    assert mail(site, DYN4_A) is Outcome.CONNECTED


def _bulk_quarantine(system: System, count: int) -> list[str]:
    """``count`` accounts on 100.64.128.0/17 addresses, all quarantined in one call."""
    addresses = [f"100.64.{128 + i // 250}.{1 + i % 250}" for i in range(count)]
    bindings = [{"account": f"bulk{i}", "ipv4": a} for i, a in enumerate(addresses)]
    system.api("POST", "/v1/sessions/bulk", {"bindings": bindings})
    accounts = [b["account"] for b in bindings]
    system.api(
        "POST", "/v1/quarantines/bulk", {"accounts": accounts, "mode": "smtp", "reason": "botnet"}
    )
    return addresses


def test_sigkill_during_apply_then_restart_without_controller(
    clean: System, tmp_path: Path
) -> None:
    clean.session("alice", ipv4=DYN4_A)
    clean.quarantine("alice")
    assert clean.converged()
    # Cleaning 20,000 holds one by one through the API would take minutes:
    # the database goes back to this copy afterwards (a rewind the agents follow).
    backup = tmp_path / "before-bulk.db"
    clean.controller.backup(backup)
    site = clean.sites["gw-a"]
    agent = site.agent
    try:
        logged = agent.logs().count("applying delta")
        addresses = _bulk_quarantine(clean, 20_000)
        # SIGKILL between "applying" (logged just before the commit) and the
        # state file write that follows it.
        assert wait_until(lambda: agent.logs().count("applying delta") > logged, 10, 0.002)
        agent.kill()
        clean.controller.kill()
        persisted = StateStore(agent.state_dir).load()  # snapshot + journal
        assert persisted is not None
        keys = {str(key) for key in persisted.state.quarantines}
        agent.start()
        assert wait_until(lambda: agent.applied_revision() == persisted.state.revision, 10)
        # Logged just after the revision shows in the metrics: polled, not read once.
        assert agent.wait_log("restored revision")
        # Last good state in force: alice refused; the bulk all in or all out.
        assert mail(site, DYN4_A) is REFUSED
        missing = missing_keys(site, "q_smtp_4", addresses)
        assert missing == (0 if addresses[0] in keys else len(addresses))
        clean.controller.start()
        assert clean.converged(20)
        assert missing_keys(site, "q_smtp_4", addresses) == 0
    finally:
        clean.controller.stop()
        clean.controller.restore(backup)
        clean.controller.start()
        assert clean.converged(20)


def test_cursor_gap_after_database_restore_resyncs(clean: System, tmp_path: Path) -> None:
    backup = tmp_path / "backup.db"
    clean.session("alice", ipv4=DYN4_A)
    clean.session("bob", ipv4=DYN4_B)
    alice = clean.quarantine("alice")
    assert clean.converged()
    clean.controller.backup(backup)  # alice quarantined, bob free
    clean.lift("quarantines", alice)
    clean.quarantine("bob")
    for site in clean.sites.values():
        assert outcome_becomes(site, DYN4_B, REFUSED)
        assert outcome_becomes(site, DYN4_A, Outcome.CONNECTED)
    ahead = clean.revision("gw-a")
    clean.controller.stop()
    clean.controller.restore(backup)
    clean.controller.start()
    assert clean.revision("gw-a") < ahead  # the controller went back in time
    for site in clean.sites.values():
        assert outcome_becomes(site, DYN4_A, REFUSED), site.agent.logs()[-2000:]
        assert outcome_becomes(site, DYN4_B, Outcome.CONNECTED)
    assert clean.converged()
    assert "database restored?" in clean.sites["gw-a"].agent.logs()


def test_corrupt_or_newer_state_or_journal_is_refused_never_half_applied(clean: System) -> None:
    site = clean.sites["gw-b"]
    agent = site.agent
    state_file = agent.state_dir / "applied.json"
    good = json.loads(state_file.read_text())
    newer = {**good, "state": {**good["state"], "schema": 99}}
    # A good snapshot whose journal has a line that is not a delta.
    header = json.dumps({"journal": good["journal"], "revision": good["state"]["revision"]})
    journal = f'{header}\n{{"generation": 4, "delta": {{"schema": 1}}}}\n'
    for content, journal_text, expected in (
        ('{"generation": 3, "state": {"gateway": "gw-b", "revis', None, "not a state file"),
        (json.dumps(newer), None, "schema"),
        (json.dumps(good), journal, "journal.jsonl line 2"),
    ):
        assert agent.terminate() == 0
        agent_cli(agent, "decommission")  # no table, no state: a fresh gateway
        agent.state_dir.mkdir(exist_ok=True)
        state_file.write_text(content)
        if journal_text is not None:
            (agent.state_dir / "journal.jsonl").write_text(journal_text)
        clean.controller.kill()
        agent.start()
        assert agent.wait_log(expected)
        refusals = [line for line in agent.logs().splitlines() if "refusing persisted" in line]
        assert refusals and expected in refusals[-1]
        assert not has_table(site)  # nothing of it reached the kernel
        assert agent.applied_revision() == -1
        clean.controller.start()
        assert clean.converged(20)
        assert has_table(site)


def _refused(site: Site, counter: str) -> float | None:
    """A named counter as the agent reads it (each scrape is one of its readings)."""
    return site.agent.metric("edgectl_dropped_packets_total", counter=counter)


def test_named_counters_carry_over_a_flushed_ruleset_repair(clean: System) -> None:
    clean.session("alice", ipv4=DYN4_A)
    clean.quarantine("alice")
    site = clean.sites["gw-a"]
    assert outcome_becomes(site, DYN4_A, REFUSED)
    for _ in range(5):
        assert mail(site, DYN4_A) is REFUSED
    before = _refused(site, "quarantine_smtp")
    assert before is not None and before >= 6
    nft(site, "flush", "ruleset")
    assert wait_until(
        lambda: has_table(site) and mail(site, DYN4_A) is REFUSED, REPAIR_BUDGET, 0.05
    )
    # The repair started from the agent's last reading, not from zero; the
    # poll's last attempt is the one refusal since.
    assert _refused(site, "quarantine_smtp") == before + 1
    # The table's comment names no revision a delta would leave stale.
    listed = nft(site, "list", "table", "inet", "edgectl").stdout
    assert 'comment "managed by edgectl: gateway gw-a"' in listed


def test_a_clean_restart_restores_from_the_payload_with_the_same_rules(clean: System) -> None:
    """SIGTERM folds the journal into a snapshot with its restore payload; the next
    start commits that payload, over the table left in force and on an empty
    ruleset (a boot), with the controller down: the same rules, over real TCP."""
    clean.session("alice", ipv4=DYN4_A)
    clean.session("bob", ipv4=DYN4_B)
    clean.quarantine("alice")  # a delta: journalled, the payload is stale until the stop
    assert clean.converged()
    site = clean.sites["gw-a"]
    agent = site.agent
    assert mail(site, DYN4_A) is REFUSED and mail(site, DYN4_B) is Outcome.CONNECTED
    revision = clean.revision("gw-a")
    line = f"restored revision {revision}"
    clean.controller.stop()
    try:
        for flush in (False, True):
            agent.terminate()
            payload = StateStore(agent.state_dir, payload=True).load_payload()
            assert payload is not None and payload.revision == revision
            if flush:
                nft(site, "flush", "ruleset")
                assert not has_table(site)
            used = agent.logs().count("full sync from the payload")
            restored = agent.logs().count(line)
            agent.start()
            assert wait_until(lambda n=restored: agent.logs().count(line) > n, 10, 0.02), (
                agent.logs()
            )
            assert agent.logs().count("full sync from the payload") == used + 1
            assert has_table(site)
            assert mail(site, DYN4_A) is REFUSED
            assert mail(site, DYN4_B) is Outcome.CONNECTED
            assert agent.applied_revision() == revision
    finally:
        clean.controller.start()
        assert clean.converged(20)
