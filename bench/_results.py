"""Machine-readable headline figures: what a benchmark measured, for ``bench/summary.py``.

Every headline benchmark prints, besides its human tables, one line per
headline row: ``BENCH-RESULT {json}``.  ``bench/summary.py`` runs the
scripts, collects those lines and writes BENCHMARKS.md's summary table from
them, so a row in that table can only come from a run of this commit.

A row's ``value`` is the median the target is judged on (a ratio against a
baseline measured in the same run, or an absolute figure where the target
is absolute), ``low``/``high`` the min-max over the runs, ``runs`` how many
interleaved runs the median is taken over.  ``met`` is None for figures
that are reported without a target.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

MARKER = "BENCH-RESULT "


@dataclass(frozen=True)
class Row:
    key: str  # stable id, e.g. "full_sync_1m"
    target: str  # what is asked, e.g. "full sync 1M keys + 5k pools <= 1.25x raw nft -f"
    value: float  # the median the target is judged on
    low: float  # min over the runs
    high: float  # max over the runs
    unit: str  # "x raw nft -f", "ms", "MiB", "req/s" ...
    clock: str  # what the figure's clock (or meter) includes, in a few words
    runs: int  # interleaved runs behind the median
    met: bool | None  # None: reported, no target
    command: str  # the command that reproduces it

    def figure(self) -> str:
        return f"{_fmt(self.value)} {self.unit} ({_fmt(self.low)}-{_fmt(self.high)}, n={self.runs})"


def _fmt(number: float) -> str:
    if number == 0 or abs(number) >= 100:
        return f"{number:,.0f}"
    if abs(number) >= 10:
        return f"{number:.1f}"
    return f"{number:.3g}" if abs(number) < 1 else f"{number:.2f}"


def emit(row: Row) -> None:
    """Print one row for ``bench/summary.py`` (stdout, flushed at once)."""
    print(MARKER + json.dumps(asdict(row), sort_keys=True), flush=True)


def emit_samples(
    key: str,
    target: str,
    samples: Sequence[float],
    *,
    unit: str,
    clock: str,
    command: str,
    met: Callable[[float], bool] | None,
) -> None:
    """One row from the runs' samples: their median judged by ``met`` (None:
    reported, no target), their min-max, their count."""
    value = statistics.median(samples)
    emit(
        Row(
            key=key,
            target=target,
            value=value,
            low=min(samples),
            high=max(samples),
            unit=unit,
            clock=clock,
            runs=len(samples),
            met=None if met is None else met(value),
            command=command,
        )
    )


def parse(text: str) -> list[Row]:
    """Every row a benchmark's output carries, in order."""
    rows = []
    for line in text.splitlines():
        if line.startswith(MARKER):
            rows.append(Row(**json.loads(line[len(MARKER) :])))
    return rows
