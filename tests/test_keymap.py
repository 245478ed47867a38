"""KeyMap: a persistent map of subscriber keys (a delta copies only what it touches)."""

from __future__ import annotations

from edgectl.model import Prefix, Quarantine, QuarantineMode
from edgectl.model.keymap import SHARDS, KeyMap


def _q(text: str) -> tuple[Prefix, Quarantine]:
    key = Prefix.parse(text)
    return key, Quarantine(key, QuarantineMode.SMTP)


def test_updated_leaves_the_old_version_as_it_was() -> None:
    base = dict(_q(f"100.64.{i // 256}.{i % 256}") for i in range(5000))
    old = KeyMap(base.items())
    gone = Prefix.parse("100.64.0.1")
    added_key, added = _q("100.127.0.1")
    new = old.updated([gone, Prefix.parse("100.126.0.0")], [(added_key, added)])
    assert dict(old.items()) == base and len(old) == 5000
    assert gone not in new and new[added_key] == added and len(new) == 5000
    assert new == {**{k: v for k, v in base.items() if k != gone}, added_key: added}


def test_a_one_key_change_copies_one_shard() -> None:
    old = KeyMap(_q(f"100.64.{i // 256}.{i % 256}") for i in range(20000))
    key, entry = _q("100.127.0.1")
    new = old.updated((), [(key, entry)])
    shared = sum(a is b for a, b in zip(old._shards, new._shards, strict=True))
    assert shared == SHARDS - 1


def test_shapes_count_keys_by_version_and_length() -> None:
    keys = KeyMap([_q("100.64.0.1"), _q("100.64.0.2"), _q("100.64.1.0/24"), _q("2001:db8::/56")])
    assert keys.shapes() == {(4, 32): 2, (4, 24): 1, (6, 56): 1}
    after = keys.updated([Prefix.parse("100.64.1.0/24"), Prefix.parse("100.64.0.1")], [])
    assert after.shapes() == {(4, 32): 1, (6, 56): 1} and len(after) == 2
    # Re-setting an existing key changes no count.
    again = after.updated((), [_q("100.64.0.2")])
    assert again.shapes() == after.shapes() and len(again) == 2
