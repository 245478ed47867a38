"""The one config reader: declared fields, read from a table or the environment."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from edgectl.tomlfile import (
    ConfigError,
    check_bounds,
    read_environment,
    read_table,
    setting,
)


def _even(value: object) -> int:
    if not isinstance(value, int) or value % 2:
        raise ValueError("expected an even number")
    return value


@dataclass(frozen=True)
class Example:
    name: str
    home: Path = setting(Path("/var/lib/x"), absolute=True)
    wait: float = setting(1.0, low=0.5, high=10, unit="seconds")
    count: int = setting(3, low=1)
    verbose: bool = False
    level: str = setting("info", choices=("info", "debug"))
    pair: int = setting(2, parse=_even)
    note: str | None = None


def test_values_in_their_types_and_defaults_untouched() -> None:
    read = read_table(Example, {"name": "a", "wait": 2, "home": "/srv/x", "note": "n"}, "ex")
    assert read == {"name": "a", "wait": 2.0, "home": Path("/srv/x"), "note": "n"}
    built = Example(**read)  # type: ignore[arg-type]
    check_bounds(built, "ex")
    assert (built.count, built.level, built.verbose) == (3, "info", False)


@pytest.mark.parametrize(
    ("table", "field", "words"),
    [
        ({}, "ex.name", "required"),
        ({"name": "a", "colour": 1}, "ex.colour", "unknown setting"),
        ({"name": 1}, "ex.name", "expected a string"),
        ({"name": "a", "wait": "2"}, "ex.wait", "expected a number of seconds"),
        ({"name": "a", "wait": True}, "ex.wait", "expected a number of seconds"),
        ({"name": "a", "count": 1.5}, "ex.count", "expected an integer"),
        ({"name": "a", "verbose": "yes"}, "ex.verbose", "true or false"),
        ({"name": "a", "home": "relative"}, "ex.home", "absolute path"),
        ({"name": "a", "pair": 3}, "ex.pair", "even number"),
    ],
)
def test_a_bad_value_names_its_field(table: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        read_table(Example, table, "ex")
    assert caught.value.field == field
    assert words in caught.value.reason


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"wait": 0.1}, "ex.wait", "must be between 0.5 and 10 seconds"),
        ({"count": 0}, "ex.count", "must be at least 1"),
        ({"level": "loud"}, "ex.level", "must be one of info, debug"),
    ],
)
def test_declared_bounds(changes: dict[str, object], field: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_bounds(Example(name="a", **changes), "ex")  # type: ignore[arg-type]
    assert (caught.value.field, caught.value.reason) == (field, reason)


def test_environment_text_in_the_fields_types() -> None:
    env = {"X_WAIT": "2.5", "X_VERBOSE": "no", "X_COUNT": "7", "X_NAME": "b", "OTHER": "1"}
    assert read_environment(Example, env, "X_", skip=("name",)) == {
        "wait": 2.5,
        "verbose": False,
        "count": 7,
    }
    with pytest.raises(ConfigError) as caught:
        read_environment(Example, {"X_COUNT": "many"}, "X_")
    assert caught.value.field == "X_COUNT"
