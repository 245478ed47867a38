"""One policy's pass: new reports and offender events become strikes, each strike
climbs the ladder, and the step's hold is placed, proposed or only recorded.

Everything one pass decides for one policy commits in one change made as
``policy:<name>``: the strikes, their holds, proposals, audit records, and
the policy's cursor and marks, so a crash never acts twice nor loses a
strike.  The rules, in the order they are checked for each strike:

- an account held now (any active quarantine; or, for this policy, a
  pending proposal or a dry-run hold still running) gets no new strike:
  its evidence is absorbed (hits during a hold are the hold working);
- an exemption wins: the strike is recorded and proposed, and only an
  analyst's ``force`` turns it into a hold;
- dry-run records what it would do; propose files a proposal;
- enforce places the hold unless a brake (fleet or pool, per sliding
  hour) is reached: then the action becomes a proposal and, once per
  brake episode, one audit record ``policy.brake`` and a metric.
- a hold the guard rails refuse is recorded as ``failed`` once, with the
  reason: never retried in a loop.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from edgectl.controller.errors import Invalid
from edgectl.controller.escalation import ladder
from edgectl.controller.store import auto_holds, loaders
from edgectl.controller.store import schema as t
from edgectl.controller.store.change import Change
from edgectl.controller.store.core import Store
from edgectl.controller.store.policies import Policy
from edgectl.model import Prefix

s, pr = t.strikes, t.proposals

# Outcomes that count towards the next strike's number (a rejected proposal
# was an analyst saying "not abuse"; an absorbed hit is no strike).
COUNTED = ("enforced", "proposed", "braked", "dry-run", "exempt", "failed")
REPORT_BATCH = 10_000  # reports a policy takes per pass: bounds one transaction
OFFENDER_WITHIN = 900  # seconds: offender events older than this make no strike


@dataclass
class Candidate:
    account: int
    ref: str
    at: datetime
    address: str
    rule: str
    evidence: list[dict[str, Any]]
    episodes: dict[int, int] = field(default_factory=dict)  # episode id -> events to mark


@dataclass
class Outcome:
    strikes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    absorbed: int = 0
    brake_alerts: int = 0


def _reports(change: Change, policy: Policy) -> tuple[list[Candidate], int]:
    r = t.reports
    rows = change.connection.execute(
        sa.select(
            r.c.id, r.c["class"], r.c.address, r.c.at, r.c.account_id, r.c.source, t.accounts.c.ref
        )
        .select_from(r.outerjoin(t.accounts, t.accounts.c.id == r.c.account_id))
        .where(r.c.id > policy.report_cursor)
        .order_by(r.c.id)
        .limit(REPORT_BATCH)
    ).all()
    cursor = rows[-1].id if rows else policy.report_cursor
    found = []
    for row in rows:
        cls = row._mapping["class"]
        if row.account_id is None or not policy.ladder.matches_report(cls):
            continue
        evidence = {
            "report": row.id,
            "class": cls,
            "address": row.address,
            "at": row.at.isoformat(),
            "source": row.source,
        }
        found.append(
            Candidate(row.account_id, row.ref, row.at, row.address, f"report:{cls}", [evidence])
        )
    return found, cursor


def _offenders(change: Change, policy: Policy) -> list[Candidate]:
    """Per account and offender rule: the events not yet counted, as one candidate."""
    e, m = t.offender_episodes, t.policy_marks
    found: list[Candidate] = []
    since = change.at - timedelta(seconds=OFFENDER_WITHIN)
    for rule in policy.ladder.offender_rules():
        rows = change.connection.execute(
            sa.select(e, t.accounts.c.ref, m.c.events.label("counted"))
            .join(t.accounts, t.accounts.c.id == e.c.account_id)
            .outerjoin(m, sa.and_(m.c.episode_id == e.c.id, m.c.policy_id == policy.id))
            .where(e.c.kind == rule.kind, e.c.last_seen >= since)
            .order_by(e.c.id)
        ).all()
        by_account: dict[int, list[Any]] = defaultdict(list)
        for row in rows:
            if row.events > (row.counted or 0):
                by_account[row.account_id].append(row)
        for account, episodes in by_account.items():
            fresh = sum(row.events - (row.counted or 0) for row in episodes)
            last = max(episodes, key=lambda row: row.last_seen)
            candidate = Candidate(
                account,
                last.ref,
                last.last_seen,
                last.key,
                rule.describe(),
                [
                    {
                        "episode": row.id,
                        "gateway": row.gateway,
                        "key": row.key,
                        "kind": row.kind,
                        "rule": row.policy,
                        "events": row.events - (row.counted or 0),
                        "first_seen": row.first_seen.isoformat(),
                        "last_seen": row.last_seen.isoformat(),
                    }
                    for row in episodes
                ],
                {row.id: row.events for row in episodes},
            )
            # Below the threshold the events wait (unmarked) for more; held
            # accounts absorb them whatever the count (see _pass).
            candidate.evidence.append({"threshold": rule.threshold, "fresh": fresh})
            found.append(candidate)
    return found


def _pool(topology: Any, address: str) -> str | None:
    try:
        placements = topology.placements(Prefix.parse(address))
    except ValueError:
        return None
    return placements[0][0].pool.name if placements else None


def run(store: Store, policy: Policy, caps: ladder.Caps) -> Outcome:
    """One pass of ``policy`` (see the module's docstring)."""
    outcome = Outcome()
    with store.write(policy.actor) as change:
        _pass(change, policy, caps, outcome)
    return outcome


def _pass(change: Change, policy: Policy, caps: ladder.Caps, outcome: Outcome) -> None:
    connection = change.connection
    reports, cursor = _reports(change, policy)
    offenders = _offenders(change, policy)
    thresholds = {r.describe(): r.threshold for r in policy.ladder.offender_rules()}
    candidates = sorted(reports + offenders, key=lambda c: (c.at, c.account))
    accounts = sorted({c.account for c in candidates})
    earliest = min((c.at for c in candidates), default=change.at)
    previous: dict[int, list[Any]] = defaultdict(list)
    horizon = earliest - timedelta(seconds=max(policy.ladder.window, ladder.MAX_DURATION))
    query = sa.select(s.c.account_id, s.c.at, s.c.outcome, s.c.step).where(
        s.c.policy_id == policy.id, s.c.at > horizon
    )
    for row in loaders.rows_in(connection, query, s.c.account_id, accounts):
        previous[row.account_id].append(row)
    pending = {
        row.account_id
        for row in loaders.rows_in(
            connection,
            sa.select(pr.c.account_id).where(pr.c.policy == policy.name, pr.c.state == "pending"),
            pr.c.account_id,
            accounts,
        )
    }
    # The brakes count actions by when they were taken (the hold's creation),
    # not by the evidence's time: a week-old report acted on now is an action now.
    q = t.quarantines
    hour_ago = change.at - ladder.HOUR
    recent = [
        (row.created_at, row.pool)
        for row in connection.execute(
            sa.select(q.c.created_at, s.c.pool)
            .join(q, q.c.id == s.c.quarantine_id)
            .where(s.c.outcome == "enforced", q.c.created_at > hour_ago)
        )
    ]
    braked_lately = (
        connection.execute(
            sa.select(pr.c.id).where(pr.c.why == "brake", pr.c.created_at > hour_ago).limit(1)
        ).first()
        is not None
    )
    _, topology = loaders.view(change)
    marks: dict[int, int] = {}
    for candidate in candidates:
        account = candidate.account
        if _held(change, policy, candidate, previous[account], account in pending):
            outcome.absorbed += 1
            marks.update(candidate.episodes)
            continue
        threshold = thresholds.get(candidate.rule)
        if threshold is not None and candidate.evidence[-1]["fresh"] < threshold:
            continue
        marks.update(candidate.episodes)
        counted = [row.at for row in previous[account] if row.outcome in COUNTED]
        number = ladder.strike_number(counted, candidate.at, policy.ladder.window)
        index, step = ladder.step_for(policy.ladder, number)
        pool = _pool(topology, candidate.address)
        evidence = {
            "rule": candidate.rule,
            "strike": number,
            "step": index,
            "items": candidate.evidence,
        }
        reason = f"{policy.actor} strike {number}: {candidate.rule}"
        quarantine = None
        proposal_why = None
        if auto_holds.exempted(change, account) is not None:
            result, proposal_why = "exempt", "exempt"
        elif policy.mode == "dry-run":
            result = "dry-run"
        elif policy.mode == "propose":
            result, proposal_why = "proposed", "propose"
        elif not ladder.admit(recent, change.at, pool, caps):
            result, proposal_why = "braked", "brake"
            if not braked_lately:
                braked_lately = True
                outcome.brake_alerts += 1
                change.audit(
                    "policy.brake",
                    "policy",
                    policy.name,
                    None,
                    {
                        "fleet_per_hour": caps.fleet,
                        "pool_per_hour": caps.pool,
                        "pool": pool,
                        "account": candidate.ref,
                    },
                    "automatic actions past the cap become proposals",
                )
        else:
            try:
                expires = ladder.hold_expiry(step, change.at)
                hold = auto_holds.place(
                    change, account, candidate.ref, step.mode, expires, reason, evidence
                )
                quarantine, result = hold["id"], "enforced"
                recent.append((change.at, pool))
            except Invalid as error:
                result = "failed"
                evidence["error"] = error.message
        ident = connection.execute(
            sa.insert(s)
            .values(
                policy_id=policy.id,
                account_id=account,
                at=candidate.at,
                number=number,
                step=index,
                mode=step.mode.value,
                pool=pool,
                outcome=result,
                evidence=json.dumps(evidence, sort_keys=True),
                quarantine_id=quarantine,
            )
            .returning(s.c.id)
        ).scalar_one()
        if proposal_why is not None:
            connection.execute(
                sa.insert(pr).values(
                    strike_id=ident,
                    policy=policy.name,
                    account_id=account,
                    mode=step.mode.value,
                    duration=step.duration,
                    review=step.review,
                    why=proposal_why,
                    created_at=change.at,
                    state="pending",
                )
            )
            pending.add(account)
        previous[account].append(_Row(account, candidate.at, result, index, step.duration))
        outcome.strikes[result] += 1
        change.audit(
            "policy.strike",
            "account",
            candidate.ref,
            None,
            {
                "id": ident,
                "outcome": result,
                "mode": step.mode.value,
                "duration": step.duration,
                "review": step.review,
                "pool": pool,
                "quarantine": quarantine,
                "evidence": evidence,
            },
            reason,
        )
    _save(change, policy, cursor, marks)


@dataclass
class _Row:
    account_id: int
    at: datetime
    outcome: str
    step: int
    duration: int | None


def _held(
    change: Change, policy: Policy, candidate: Candidate, previous: list[Any], pending: bool
) -> bool:
    if pending or auto_holds.held(change, candidate.account) is not None:
        return True
    if policy.mode != "dry-run":
        return False
    # A dry run holds nobody, so "held" is what its own record says it would have done.
    for row in previous:
        if row.outcome != "dry-run":
            continue
        step = policy.ladder.steps[min(row.step or 0, len(policy.ladder.steps) - 1)]
        until = ladder.hold_expiry(step, row.at)
        if row.at <= candidate.at and (until is None or candidate.at < until):
            return True
    return False


def _save(change: Change, policy: Policy, cursor: int, marks: dict[int, int]) -> None:
    connection = change.connection
    if cursor != policy.report_cursor:
        connection.execute(
            sa.update(t.policies).where(t.policies.c.id == policy.id).values(report_cursor=cursor)
        )
    if not marks:
        return
    m = t.policy_marks
    connection.execute(
        sa.delete(m).where(m.c.policy_id == policy.id, m.c.episode_id.in_(sorted(marks)))
    )
    connection.execute(
        sa.insert(m),
        [{"policy_id": policy.id, "episode_id": k, "events": v} for k, v in sorted(marks.items())],
    )


def counts(store: Store) -> dict[str, Any]:
    """For /metrics: strikes by outcome, brake alerts, pending proposals."""
    with store.read() as connection:
        by_outcome: dict[str, int] = dict(
            connection.execute(sa.select(s.c.outcome, sa.func.count()).group_by(s.c.outcome)).all()
        )
        a = t.audit
        alerts = connection.execute(
            sa.select(sa.func.count())
            .select_from(a)
            .where(a.c.object_type == "policy", a.c.action == "policy.brake")
        ).scalar_one()
        pending = connection.execute(
            sa.select(sa.func.count()).select_from(pr).where(pr.c.state == "pending")
        ).scalar_one()
    return {"strikes": by_outcome, "brake_alerts": int(alerts), "pending": int(pending)}
