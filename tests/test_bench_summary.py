"""bench/summary.py: BENCH-RESULT rows in, the marked section of BENCHMARKS.md out."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _load(name: str) -> ModuleType:
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


summary = _load("summary")
results = sys.modules["_results"]  # the one summary.py imported


def _row(key: str, value: float, met: bool | None) -> object:
    return results.Row(
        key=key,
        target=f"{key} target",
        value=value,
        low=value / 2,
        high=value * 2,
        unit="ms",
        clock="POST sent -> in force",
        runs=7,
        met=met,
        command=f"bench/{key}.py --fast",
    )


def test_rows_are_parsed_out_of_mixed_output() -> None:
    row = _row("propagation_p99", 180.0, True)
    out = (
        "propagation, 52 gateways\n"
        + _capture(row)
        + "slowest: 200 ms\nBENCH-RESULT-not-a-row {}\n"
    )
    assert results.parse(out) == [row]


def _capture(row: object) -> str:
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        results.emit(row)
    return buffer.getvalue()


def _headline(script: str, *keys: str) -> object:
    return summary.Headline(script, ("--fast",), tuple((k, f"{k} asked") for k in keys), 10)


def test_a_missing_or_failed_row_is_not_measured_never_dropped() -> None:
    good = summary.Outcome(
        _headline("a.py", "a_one", "a_two"),
        (_row("a_one", 1.5, True), _row("a_extra", 3.0, None)),
        None,
        1.0,
        None,
    )
    failed = summary.Outcome(_headline("b.py", "b_one"), (), "exit status 1", 2.0, None)
    lines = summary.lines_of([good, failed])
    assert [line.key for line in lines] == ["a_one", "a_two", "a_extra", "b_one"]
    by_key = {line.key: line for line in lines}
    assert by_key["a_one"].status() == "met"
    assert by_key["a_extra"].status() == "reported"
    assert by_key["a_two"].row is None
    assert "printed no such row" in by_key["a_two"].status()
    assert by_key["a_two"].target == "a_two asked"
    assert by_key["b_one"].status() == "**not measured**: exit status 1"
    assert by_key["b_one"].command == ".venv/bin/python bench/b.py --fast"
    assert not all(line.ok() for line in lines)


def test_the_marked_section_is_replaced_and_nothing_else() -> None:
    outcome = summary.Outcome(
        _headline("a.py", "a_one"), (_row("a_one", 300.0, False),), None, 1.0, None
    )
    table = summary.render_table(summary.lines_of([outcome]), ["Measured at commit `abc`."])
    assert "| `a_one` | a_one target | 300 ms (150-600, n=7) | POST sent -> in force |" in table
    assert "**not met**" in table
    old = f"# Benchmarks\n\n{summary.BEGIN}\n| stale | 1.18x |\n{summary.END}\n\n## Details\nkept\n"
    new = summary.replace_section(old, table)
    assert "stale" not in new
    assert new.startswith(f"# Benchmarks\n\n{summary.BEGIN}\nMeasured at commit `abc`.")
    assert new.endswith(f"{summary.END}\n\n## Details\nkept\n")
    assert summary.replace_section(new, table) == new  # a second write changes nothing


def test_no_markers_no_write() -> None:
    with pytest.raises(ValueError):
        summary.replace_section("# Benchmarks\nno markers\n", "| table |\n")
    doubled = f"{summary.BEGIN}\n{summary.END}\n{summary.BEGIN}\n{summary.END}\n"
    with pytest.raises(ValueError):
        summary.replace_section(doubled, "| table |\n")


def test_cells_cannot_break_the_table() -> None:
    row = results.Row("k", "a | b", 1.0, 1.0, 1.0, "x", "c\nd", 3, None, "cmd")
    line = summary.Line("k", row.target, row, "", row.command)
    table = summary.render_table([line], [])
    body = table.splitlines()[-1]
    assert "a \\| b" in body and "c d" in body


def test_the_headline_table_fits_the_time_budget_and_keys_are_unique() -> None:
    assert sum(h.budget_s for h in summary.HEADLINES) <= summary.TOTAL_BUDGET_S
    keys = [key for h in summary.HEADLINES for key, _ in h.rows]
    assert len(keys) == len(set(keys))
    assert len({h.script for h in summary.HEADLINES}) == len(summary.HEADLINES)
    full = [h.sized(True) for h in summary.HEADLINES]
    assert sum(h.budget_s for h in full) <= summary.FULL_BUDGET_S
    full_keys = [key for h in full for key, _ in h.rows]
    assert len(full_keys) == len(set(full_keys))


@pytest.mark.parametrize("full", [False, True], ids=["reduced", "full"])
def test_every_headline_script_is_here_and_takes_its_arguments(full: bool) -> None:
    """A renamed script or option would otherwise show only as 'not measured' in a run."""
    for headline in (h.sized(full) for h in summary.HEADLINES):
        script = summary.REPO / "bench" / headline.script
        assert script.exists(), headline.script
        source = script.read_text()
        for option in (a for a in headline.args if a.startswith("--")):
            assert f'"{option}"' in source, f"{headline.script} takes no {option}"
        for key, _ in headline.rows:
            # A sized key is written f"full_sync_{size}": its stem is in the source.
            stem = re.sub(r"_\d+[km](_cpu)?$", "", key)
            assert stem in source, f"{headline.script} cannot print {key}"


def test_a_script_not_in_this_commit_is_reported_as_such(tmp_path: Path) -> None:
    headline = _headline("no_such_benchmark.py", "nothing")
    outcome = summary.run_headline(headline, 10, tmp_path)
    assert outcome.problem == "script not in this commit"
    assert summary.lines_of([outcome])[0].status().startswith("**not measured**")
