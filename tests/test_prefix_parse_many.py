"""``Prefix.parse_many``: the bulk parse takes exactly what ``Prefix.parse`` takes,
with the same values, or doubts (None) and leaves the list to ``parse``."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from edgectl.model.errors import ModelError
from edgectl.model.prefix import Prefix

_V4 = st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32)).map(
    lambda t: str(Prefix(4, t[0] & ~((1 << (32 - t[1])) - 1), t[1]))
)
_V6 = st.tuples(st.integers(0, 2**128 - 1), st.integers(0, 128)).map(
    lambda t: str(Prefix(6, t[0] & ~((1 << (128 - t[1])) - 1), t[1]))
)
# Texts parse refuses or reads its own way: host bits, bad lengths, spaces,
# other scripts' digits, underscores int() would take, no address at all.
_ODD = st.sampled_from(
    [
        "100.64.0.1/24",
        "100.64.0.0/33",
        "100.64.0.0/",
        " 100.64.0.0/24",
        "100.64.0.0/24 ",
        "100.64.0.0/٢٤",
        "100.64.0.0/2_4",
        "100.64.0.0/024",
        "2001:db8::1/56",
        "2001:db8::/129",
        "100.64.0.5",
        "2001:db8::5",
        "100.64.0.0/24/1",
        "",
        "/24",
        "1.2.3",
        "::ffff:1.2.3.4/128",
    ]
)
_TEXTS = st.one_of(_V4, _V6, _ODD)


def _each(texts: list[object]) -> list[Prefix] | None:
    try:
        return [Prefix.parse(text) for text in texts]
    except ModelError:
        return None


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.lists(_V4, max_size=20), st.lists(_V6, max_size=20), st.lists(_TEXTS)))
def test_the_bulk_parse_takes_what_parse_takes(texts: list[str]) -> None:
    bulk = Prefix.parse_many(texts)
    if bulk is not None:
        assert bulk == _each(texts)
        assert all(type(prefix) is Prefix for prefix in bulk)


def test_the_bulk_parse_takes_the_common_lists() -> None:
    pools = [f"100.64.{i}.0/24" for i in range(300)]
    keys = [f"2001:db8:1000:{i:x}00::/56" for i in range(200)]
    hosts = [f"100.64.0.{i}" for i in range(200)]
    for texts in (pools, keys, hosts):
        assert Prefix.parse_many(texts) == _each(texts)  # type: ignore[arg-type]
    assert Prefix.parse_many([]) == []
    assert Prefix.parse_many([*pools, "2001:db8::/32"]) is None  # two IP versions
    assert Prefix.parse_many([*pools, 5]) is None
