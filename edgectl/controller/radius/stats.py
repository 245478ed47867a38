"""The feed's counters, kept in the controller process (the worker process sends
its share) and read by /metrics (no pyrad here)."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

# Commit latency histogram bounds, seconds.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass
class StatsView:
    packets: dict[tuple[str, str], int]
    dropped: dict[str, int]
    commit_buckets: list[int]  # cumulative, one per BUCKETS bound
    commit_count: int
    commit_sum: float
    queued: int
    worker_restarts: int = 0


@dataclass
class Stats:
    """Counters shared by the feed's threads (and read by /metrics)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    packets: Counter[tuple[str, str]] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))
    commit_count: int = 0
    commit_sum: float = 0.0

    def packet(self, kind: str, outcome: str, count: int = 1) -> None:
        with self.lock:
            self.packets[(kind, outcome)] += count

    def packets_counted(self, counts: Counter[tuple[str, str]]) -> None:
        """A batch's packets by (kind, outcome), under one lock."""
        with self.lock:
            self.packets.update(counts)

    def drop(self, reason: str, count: int = 1) -> None:
        with self.lock:
            self.dropped[reason] += count

    def commit(self, seconds: float) -> None:
        with self.lock:
            self.commit_count += 1
            self.commit_sum += seconds
            for index, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    self.buckets[index] += 1

    def view(self, queued: int, worker_restarts: int = 0) -> StatsView:
        with self.lock:
            return StatsView(
                dict(self.packets),
                dict(self.dropped),
                list(self.buckets),
                self.commit_count,
                self.commit_sum,
                queued,
                worker_restarts,
            )
