"""Agent metrics, rendered as Prometheus text (served by daemon.metrics_http).

Kernel counters are read at scrape time (one netlink GETOBJ dump, no set
listing), so a scrape always shows what the kernel counted, not a cached copy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

# Apply latency buckets (seconds): a delta is sub-millisecond to a few ms,
# a full sync of a million keys several seconds.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# Named-counter prefix (render.py) -> the policy it counts drops/refusals for.
POLICY_OF_COUNTER = {
    "op25b_": "op25b",
    "rate_": "rate_limit",
    "concurrent_": "concurrency_limit",
    "destination_": "destination_limit",
    "quarantine_": "quarantine",
}

Counters = Mapping[str, tuple[int, int]]


def policy_of(counter: str) -> str:
    for prefix, policy in POLICY_OF_COUNTER.items():
        if counter.startswith(prefix):
            return policy
    return "other"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """What the agent did, updated by the loop and drift monitor; thread-safe."""

    def __init__(self, gateway: str, clock: Callable[[], float] = time.time) -> None:
        self.gateway = gateway
        self._clock = clock
        self._lock = threading.Lock()
        self.applied_revision: int | None = None
        self.last_sync: float | None = None  # wall time of the last successful sync
        self.drift_repairs = 0
        self.drift_checks = 0
        self.controller_errors = 0
        self.apply_failures = 0
        self.persist_failures = 0
        self.controller_reachable = False
        self.offenders = 0  # entries the offender book tracks now
        self.nflog_overruns = 0
        self.nflog_lost_events = 0
        self._buckets: dict[str, list[int]] = {}
        self._sum: dict[str, float] = {}
        self._count: dict[str, int] = {}

    def observe_apply(self, kind: str, seconds: float) -> None:
        with self._lock:
            buckets = self._buckets.setdefault(kind, [0] * len(BUCKETS))
            for index, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    buckets[index] += 1
            self._sum[kind] = self._sum.get(kind, 0.0) + seconds
            self._count[kind] = self._count.get(kind, 0) + 1

    def synced(self, revision: int) -> None:
        with self._lock:
            self.applied_revision = revision
            self.last_sync = self._clock()
            self.controller_reachable = True

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)

    def set_reachable(self, reachable: bool) -> None:
        with self._lock:
            self.controller_reachable = reachable

    def set_offenders(self, tracked: int) -> None:
        with self._lock:
            self.offenders = tracked

    def seconds_since_sync(self) -> float | None:
        with self._lock:
            return None if self.last_sync is None else max(0.0, self._clock() - self.last_sync)

    def render(self, counters: Counters) -> str:
        """Prometheus text exposition format 0.0.4."""
        gw = f'gateway="{_label(self.gateway)}"'
        lines: list[str] = []

        def metric(name: str, kind: str, help_text: str, samples: list[str]) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(samples)

        since = self.seconds_since_sync()
        with self._lock:
            revision = -1 if self.applied_revision is None else self.applied_revision
            metric(
                "edgectl_agent_applied_revision",
                "gauge",
                "Revision of the desired state in force (-1: none yet).",
                [f"edgectl_agent_applied_revision{{{gw}}} {revision}"],
            )
            metric(
                "edgectl_agent_seconds_since_last_sync",
                "gauge",
                "Seconds since the last successful sync with the controller (-1: never).",
                [f"edgectl_agent_seconds_since_last_sync{{{gw}}} {-1 if since is None else since}"],
            )
            metric(
                "edgectl_agent_controller_reachable",
                "gauge",
                "1 if the last request to the controller succeeded.",
                [f"edgectl_agent_controller_reachable{{{gw}}} {int(self.controller_reachable)}"],
            )
            metric(
                "edgectl_agent_offenders",
                "gauge",
                "Offender entries (subscriber, rule) seen within the offenders window.",
                [f"edgectl_agent_offenders{{{gw}}} {self.offenders}"],
            )
            for name, attr, help_text in (
                ("drift_repairs_total", "drift_repairs", "Repairs of a table someone changed."),
                ("drift_checks_total", "drift_checks", "Read-backs after a foreign commit."),
                ("controller_errors_total", "controller_errors", "Failed controller requests."),
                ("apply_failures_total", "apply_failures", "Transactions the kernel refused."),
                ("persist_failures_total", "persist_failures", "Failed state-file writes."),
                (
                    "nflog_overruns_total",
                    "nflog_overruns",
                    "Times the kernel dropped block log events: the listener's queue was full.",
                ),
                (
                    "nflog_lost_events_total",
                    "nflog_lost_events",
                    "Block log events those overruns cost (from the events' sequence numbers).",
                ),
            ):
                full = f"edgectl_agent_{name}"
                metric(full, "counter", help_text, [f"{full}{{{gw}}} {getattr(self, attr)}"])
            samples = []
            for kind in sorted(self._count):
                labels = f'{gw},kind="{kind}"'
                bucket = "edgectl_agent_apply_seconds_bucket"
                for bound, count in zip(BUCKETS, self._buckets[kind], strict=True):
                    samples.append(f'{bucket}{{{labels},le="{bound}"}} {count}')
                samples.append(
                    f'edgectl_agent_apply_seconds_bucket{{{labels},le="+Inf"}} {self._count[kind]}'
                )
                samples.append(f"edgectl_agent_apply_seconds_sum{{{labels}}} {self._sum[kind]}")
                samples.append(f"edgectl_agent_apply_seconds_count{{{labels}}} {self._count[kind]}")
            metric(
                "edgectl_agent_apply_seconds",
                "histogram",
                "Time to commit a desired state to the kernel, by kind (full or delta).",
                samples,
            )
        packets = []
        octets = []
        for name, (count, size) in sorted(counters.items()):
            labels = f'{gw},policy="{policy_of(name)}",counter="{_label(name)}"'
            packets.append(f"edgectl_dropped_packets_total{{{labels}}} {count}")
            octets.append(f"edgectl_dropped_bytes_total{{{labels}}} {size}")
        metric(
            "edgectl_dropped_packets_total",
            "counter",
            "Packets refused (or, in shadow mode, only counted) per policy: OP25B blocks, "
            "rate/concurrency/destination limits, quarantines.  From the table's named counters.",
            packets,
        )
        metric("edgectl_dropped_bytes_total", "counter", "Bytes of those packets.", octets)
        return "\n".join(lines) + "\n"
