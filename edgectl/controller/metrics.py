"""The controller's Prometheus exposition (text format 0.0.4), written by hand.

One module renders it, with no client library: everything shown is read
from the store at scrape time, so there is no in-process registry to keep.
What agents put in a status report's ``detail`` is untrusted: a missing or
malformed field drops its sample, never the scrape.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgectl.controller.radius.stats import BUCKETS, StatsView
from edgectl.controller.store.telemetry import GatewayFacts, Snapshot
from edgectl.model import QuarantineMode

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Bounds on what one agent's detail can add to a scrape.
MAX_COUNTERS = 256
MAX_LABEL = 128

Labels = Sequence[tuple[str, str]]


@dataclass
class Family:
    name: str
    kind: str  # gauge | counter
    help: str
    # (labels, value, suffix): the suffix names a histogram's _bucket/_sum/_count.
    samples: list[tuple[Labels, float, str]] = field(default_factory=list)

    def add(self, labels: Labels, value: float, suffix: str = "") -> None:
        self.samples.append((labels, value, suffix))


def escape(value: str) -> str:
    """A label value as the text format needs it quoted."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def exposition(families: Iterable[Family]) -> str:
    lines: list[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for labels, value, suffix in family.samples:
            text = ",".join(f'{name}="{escape(label)}"' for name, label in labels)
            name = family.name + suffix
            lines.append(f"{name}{{{text}}} {number(value)}" if text else f"{name} {number(value)}")
    return "\n".join(lines) + "\n"


# Untrusted detail ---------------------------------------------------------------


def _count(value: object) -> int | None:
    """A non-negative integer (JSON true is not one)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _seconds(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return float(value)


def _label(value: object, longest: int = MAX_LABEL) -> str | None:
    # Printable excludes lone surrogates, which would not encode as UTF-8.
    if not isinstance(value, str) or not 0 < len(value) <= longest or not value.isprintable():
        return None
    return value


def _detail(text: str | None) -> Mapping[str, Any]:
    if text is None:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _counters(detail: Mapping[str, Any]) -> list[tuple[str, str, int | None, int | None]]:
    """(counter, policy, packets, bytes) from the agent's ``detail["counters"]``."""
    counters = detail.get("counters")
    if not isinstance(counters, dict):
        return []
    found = []
    for name in sorted(key for key in counters if _label(key) is not None)[:MAX_COUNTERS]:
        value = counters[name]
        if not isinstance(value, dict):
            continue
        policy = _label(value.get("policy"), 64) or "other"
        found.append((name, policy, _count(value.get("packets")), _count(value.get("bytes"))))
    return found


# Families ----------------------------------------------------------------------------


def _gateway_families(facts: Sequence[GatewayFacts], snapshot: Snapshot) -> list[Family]:
    wanted = Family(
        "edgectl_controller_gateway_wanted_revision",
        "gauge",
        "Revision of the desired state the controller serves the gateway.",
    )
    applied = Family(
        "edgectl_controller_gateway_applied_revision",
        "gauge",
        "Revision the gateway's agent last reported in force (-1: never reported).",
    )
    converged = Family(
        "edgectl_controller_gateway_converged",
        "gauge",
        "1 if the applied revision is the wanted one.",
    )
    seen = Family(
        "edgectl_controller_gateway_seconds_since_report",
        "gauge",
        "Seconds since the agent's last status report (absent: never reported).",
    )
    lag = Family(
        "edgectl_controller_gateway_lag_seconds",
        "gauge",
        "Seconds since the controller first wanted a revision the gateway has not applied "
        "(0 when converged).",
    )
    repairs = Family(
        "edgectl_controller_gateway_drift_repairs",
        "gauge",
        "Drift repairs the agent reported (its counter since it started).",
    )
    sync = Family(
        "edgectl_controller_gateway_seconds_since_sync",
        "gauge",
        "Seconds since the agent's last successful sync: what it reported plus the report's age.",
    )
    offenders = Family(
        "edgectl_controller_gateway_offenders",
        "gauge",
        "Entries in the gateway's latest offenders report (absent: it never sent one).",
    )
    listening = Family(
        "edgectl_controller_gateway_offenders_available",
        "gauge",
        "1 if the agent's offender listener was working at its latest offenders report.",
    )
    packets = Family(
        "edgectl_controller_dropped_packets_total",
        "counter",
        "Packets the gateway refused (or, in shadow mode, only counted) per policy and "
        "named counter, as its agent last reported them.",
    )
    octets = Family(
        "edgectl_controller_dropped_bytes_total",
        "counter",
        "Bytes of those packets, as the agent last reported them.",
    )
    for gateway in facts:
        labels = (("gateway", gateway.name),)
        view = gateway.convergence
        wanted.add(labels, int(view["wanted_revision"]))
        reported = view["applied_revision"]
        applied.add(labels, -1 if reported is None else int(reported))
        converged.add(labels, int(bool(view["converged"])))
        if view["seconds_since_seen"] is not None:
            seen.add(labels, float(view["seconds_since_seen"]))
        if view["converged"]:
            lag.add(labels, 0)
        elif view["lag_seconds"] is not None:
            lag.add(labels, float(view["lag_seconds"]))
        if gateway.offenders is not None:
            offenders.add(labels, int(gateway.offenders["count"]))
            listening.add(labels, int(bool(gateway.offenders["available"])))
        detail = _detail(gateway.detail)
        drift = _count(detail.get("drift_repairs"))
        if drift is not None:
            repairs.add(labels, drift)
        since = _seconds(detail.get("seconds_since_sync"))
        if since is not None and gateway.reported_at is not None:
            age = max(0.0, (snapshot.at - gateway.reported_at).total_seconds())
            sync.add(labels, round(since + age, 3))
        for name, policy, count, size in _counters(detail):
            counter = (*labels, ("policy", policy), ("counter", name))
            if count is not None:
                packets.add(counter, count)
            if size is not None:
                octets.add(counter, size)
    return [
        wanted,
        applied,
        converged,
        seen,
        lag,
        repairs,
        sync,
        offenders,
        listening,
        packets,
        octets,
    ]


def families(snapshot: Snapshot) -> list[Family]:
    revision = Family(
        "edgectl_controller_revision", "gauge", "The controller's change sequence number."
    )
    revision.add((), snapshot.seq)
    count = Family("edgectl_controller_gateways", "gauge", "Registered gateways.")
    count.add((), len(snapshot.gateways))
    held = Family("edgectl_controller_quarantines", "gauge", "Active quarantines by mode.")
    for mode in QuarantineMode:
        held.add((("mode", mode.value),), snapshot.quarantines.get(mode.value, 0))
    return [revision, count, held, *_gateway_families(snapshot.gateways, snapshot)]


def radius_families(view: StatsView, open_sessions: Mapping[str, int]) -> list[Family]:
    """The RADIUS accounting feed: in-process counters since start, and open
    sessions per NAS as stored (so every controller process reports the same)."""
    packets = Family(
        "edgectl_controller_radius_packets_total",
        "counter",
        "Accounting-Requests answered (or retransmissions absorbed) by status type and outcome.",
    )
    for (kind, outcome), count in sorted(view.packets.items()):
        packets.add((("type", kind), ("outcome", outcome)), count)
    dropped = Family(
        "edgectl_controller_radius_dropped_total",
        "counter",
        "Datagrams dropped unanswered, by reason (unknown_nas, bad_authenticator, malformed, "
        "queue_full, commit_failed, ...).",
    )
    for reason, count in sorted(view.dropped.items()):
        dropped.add((("reason", reason),), count)
    latency = Family(
        "edgectl_controller_radius_commit_seconds",
        "histogram",
        "Time to commit one batch of accounting events (one store transaction).",
    )
    for bound, count in zip(BUCKETS, view.commit_buckets, strict=True):
        latency.add((("le", number(bound)),), count, "_bucket")
    latency.add((("le", "+Inf"),), view.commit_count, "_bucket")
    latency.add((), round(view.commit_sum, 6), "_sum")
    latency.add((), view.commit_count, "_count")
    queued = Family(
        "edgectl_controller_radius_queued",
        "gauge",
        "Packets decoded and waiting for a commit (bounded by max_queue).",
    )
    queued.add((), view.queued)
    sessions = Family(
        "edgectl_controller_radius_open_sessions",
        "gauge",
        "Open sessions per NAS (the clients file's name), as stored.",
    )
    for nas, count in sorted(open_sessions.items()):
        sessions.add((("nas", nas),), count)
    restarts = Family(
        "edgectl_controller_radius_worker_restarts_total",
        "counter",
        "Times the feed's worker process (sockets, decoding, answers) died and was restarted.",
    )
    restarts.add((), view.worker_restarts)
    return [packets, dropped, latency, queued, sessions, restarts]


def render(snapshot: Snapshot, extra: Sequence[Family] = ()) -> str:
    return exposition([*families(snapshot), *extra])


def escalation_families(counts: Mapping[str, Any], leader: bool, passes: int) -> list[Family]:
    """The escalation engine, from the store (the same on every controller process)."""
    strikes = Family(
        "edgectl_controller_escalation_strikes_total",
        "counter",
        "Strikes by what the policy did (enforced, proposed, braked, dry-run, exempt, failed, "
        "rejected); a deleted policy's strikes leave the count.",
    )
    for outcome, value in sorted(counts["strikes"].items()):
        strikes.add([("outcome", outcome)], int(value))
    alerts = Family(
        "edgectl_controller_escalation_brake_alerts_total",
        "counter",
        "Times a brake was reached after an hour without one (one audit record policy.brake each).",
    )
    alerts.add([], counts["brake_alerts"])
    pending = Family(
        "edgectl_controller_escalation_proposals_pending",
        "gauge",
        "Proposals waiting for an analyst.",
    )
    pending.add([], counts["pending"])
    leads = Family(
        "edgectl_controller_escalation_leader",
        "gauge",
        "1 if this controller process runs the escalation engine now.",
    )
    leads.add([], 1 if leader else 0)
    made = Family(
        "edgectl_controller_escalation_passes_total",
        "counter",
        "Engine passes this controller process made while leading.",
    )
    made.add([], passes)
    return [strikes, alerts, pending, leads, made]


def long_poll_families(parked: int, listening: bool) -> list[Family]:
    """This process's parked long-polls (sizing: agents per controller process)."""
    waiting = Family(
        "edgectl_controller_long_polls_parked",
        "gauge",
        "Desired-state long-polls parked on this controller process, waiting for a change.",
    )
    waiting.add([], parked)
    follows = Family(
        "edgectl_controller_change_listener_up",
        "gauge",
        "1 while this process LISTENs for other controller processes' changes "
        "(PostgreSQL); 0 on SQLite or while the connection is being reopened.",
    )
    follows.add([], 1 if listening else 0)
    return [waiting, follows]
