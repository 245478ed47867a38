"""Which conntrack entries a hold cuts: ctnetlink decoding and prefix matching (no kernel)."""

from __future__ import annotations

import socket
import struct
import threading
from datetime import UTC, datetime, timedelta

import pytest

from edgectl.agent import conntrack as ct
from edgectl.agent import flow_cut
from edgectl.agent.flow_cut import holds
from edgectl.agent.netlink.codec import NlMsg, nla, nla_nested
from edgectl.agent.netlink.constants import NLM_F_MULTI
from edgectl.model.keymap import KeyMap
from edgectl.model.policy import Quarantine, QuarantineMode
from edgectl.model.prefix import Prefix

NOW = datetime(2026, 1, 1, tzinfo=UTC)
MAIL = (25, 465, 587)


def message(src: str, dst: str, proto: int, dport: int) -> NlMsg:
    """A conntrack entry as ctnetlink dumps it: nfgenmsg, then CTA_TUPLE_ORIG nested."""
    family = socket.AF_INET6 if ":" in src else socket.AF_INET
    src_type, dst_type = (ct.CTA_IP_V6_SRC, ct.CTA_IP_V6_DST) if ":" in src else (1, 2)
    ip = nla_nested(
        ct.CTA_TUPLE_IP,
        nla(src_type, socket.inet_pton(family, src)),
        nla(dst_type, socket.inet_pton(family, dst)),
    )
    proto_attrs = nla_nested(
        ct.CTA_TUPLE_PROTO,
        nla(ct.CTA_PROTO_NUM, bytes([proto])),
        nla(ct.CTA_PROTO_DST_PORT, struct.pack(">H", dport)),
    )
    body = struct.pack("=BBH", family, 0, 0) + nla_nested(ct.CTA_TUPLE_ORIG, ip, proto_attrs)
    return NlMsg(0x100, NLM_F_MULTI, 1, 0, body)


def doomed(
    cut: ct.Cut, src: str, dst: str, proto: int = socket.IPPROTO_TCP, port: int = 80
) -> bool:
    version = 6 if ":" in src else 4
    entry = ct._decode(message(src, dst, proto, port), version)
    assert entry is not None
    return ct._doomed(entry, ct._Matcher(cut.everything), ct._Matcher(cut.mail), cut.mail_ports)


def test_decode_reads_the_original_tuple() -> None:
    entry = ct._decode(message("100.64.0.10", "203.0.113.25", socket.IPPROTO_TCP, 587), 4)
    assert entry is not None
    assert (entry.src, entry.dst, entry.proto, entry.dport) == (
        Prefix.parse("100.64.0.10").value,
        Prefix.parse("203.0.113.25").value,
        socket.IPPROTO_TCP,
        587,
    )


def test_the_fast_path_reads_the_same_addresses_as_the_attribute_walk() -> None:
    for src, dst, version in (
        ("100.64.0.10", "203.0.113.25", 4),
        ("2001:db8:1000:100::10", "2001:db8:ffff::25", 6),
    ):
        msg = message(src, dst, socket.IPPROTO_UDP, 53)
        entry = ct._decode(msg, version)
        assert entry is not None
        assert ct._ends(msg.payload, version) == (entry.src, entry.dst)
    # An unexpected layout is not guessed at: the caller walks the attributes.
    assert ct._ends(b"\0" * 64, 4) is None


def test_block_cuts_both_directions_of_the_key_only() -> None:
    cut = holds([Quarantine(Prefix.parse("100.64.0.10"), QuarantineMode.BLOCK)], MAIL, NOW)
    assert doomed(cut, "100.64.0.10", "203.0.113.25", socket.IPPROTO_UDP, 5001)
    assert doomed(cut, "203.0.113.25", "100.64.0.10")  # a connection made to the key
    assert not doomed(cut, "100.64.0.11", "203.0.113.25")


def test_ipv6_keys_match_every_address_of_the_delegated_prefix() -> None:
    key = Prefix.parse("2001:db8:1000:100::/56")
    cut = holds([Quarantine(key, QuarantineMode.BLOCK)], MAIL, NOW)
    assert doomed(cut, "2001:db8:1000:100::10", "2001:db8:ffff::25")
    assert doomed(cut, "2001:db8:1000:1ff:ffff::1", "2001:db8:ffff::25")
    assert not doomed(cut, "2001:db8:1000:200::10", "2001:db8:ffff::25")


def test_smtp_cuts_mail_ports_only_and_expired_or_walled_holds_nothing() -> None:
    cut = holds([Quarantine(Prefix.parse("100.64.0.10"), QuarantineMode.SMTP)], MAIL, NOW)
    assert doomed(cut, "100.64.0.10", "203.0.113.25", port=587)
    assert not doomed(cut, "100.64.0.10", "203.0.113.25", port=443)
    assert not doomed(cut, "100.64.0.10", "203.0.113.25", socket.IPPROTO_UDP, 25)
    expired = Quarantine(
        Prefix.parse("100.64.0.11"), QuarantineMode.BLOCK, expires=NOW - timedelta(seconds=1)
    )
    walled = Quarantine(Prefix.parse("100.64.0.12"), QuarantineMode.WALLED_GARDEN)
    assert not holds([expired, walled], MAIL, NOW)


def _recording_cuts(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[list[list[ct.CutSource]], threading.Event, threading.Event]:
    """BackgroundCuts' cut replaced by a recorder: sets ``started``, waits for ``release``."""
    done: list[list[ct.CutSource]] = []
    release = threading.Event()
    started = threading.Event()

    def record(sock: object, sources: list[ct.CutSource]) -> None:
        done.append(list(sources))
        started.set()
        if not release.wait(5):
            raise AssertionError("never released")
        if any(isinstance(s, ct.Cut) and s.mail_ports == frozenset({9}) for s in sources):
            raise RuntimeError("a cut that fails unexpectedly")

    monkeypatch.setattr(flow_cut, "cut_now", record)
    return done, release, started


def key_cut(text: str, ports: frozenset[int] = frozenset({25})) -> ct.Cut:
    return ct.Cut(frozenset({Prefix.parse(text)}), frozenset(), ports)


def test_cuts_arriving_while_one_runs_go_together_in_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    done, release, started = _recording_cuts(monkeypatch)
    cuts = flow_cut.BackgroundCuts(None)  # a socket only: the recorder touches no kernel
    try:
        first = key_cut("100.64.0.1/32")
        cuts.submit(first)
        assert started.wait(5), "the first cut never started"
        assert done == [[first]]
        second = key_cut("100.64.0.2/32")
        third = ct.Cut(frozenset(), frozenset({Prefix.parse("100.64.0.3/32")}), frozenset())
        cuts.submit(second)
        cuts.submit(third)
        assert not cuts.idle(0.05)  # the first is still running
        release.set()
        assert cuts.idle(5)
        assert done == [[first], [second, third]]  # one dump for both
    finally:
        release.set()
        cuts.close()


def test_a_failing_cut_leaves_the_thread_running_and_close_finishes_what_is_pending(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    done, release, _ = _recording_cuts(monkeypatch)
    release.set()
    cuts = flow_cut.BackgroundCuts(None)
    cuts.submit(key_cut("100.64.0.1/32", frozenset({9})))  # raises inside the thread
    assert cuts.idle(5)
    last = key_cut("100.64.0.4/32")
    cuts.submit(last)
    cuts.close()
    assert done[-1] == [last] and len(done) == 2


def _fake_dumps(monkeypatch: pytest.MonkeyPatch) -> tuple[dict[int, list[NlMsg]], list[object]]:
    dumps: dict[int, list[NlMsg]] = {4: [], 6: []}
    monkeypatch.setattr(ct, "_dump", lambda sock, version: iter(dumps[version]))
    monkeypatch.setattr(ct, "entries", lambda sock: len(dumps[4]) + len(dumps[6]))
    sent: list[object] = []
    monkeypatch.setattr(
        ct, "_pipeline", lambda sock, requests: sent.extend(requests) or [0] * len(requests)
    )
    return dumps, sent


def test_a_lazy_cut_is_computed_only_when_the_dump_shows_an_entry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a full sync the cut names every held key: no flows, no matching work."""
    computed: list[int] = []

    def source() -> ct.Cut:
        computed.append(1)
        return ct.Cut(frozenset({Prefix.parse("100.64.0.1/32")}), frozenset(), frozenset())

    dumps, sent = _fake_dumps(monkeypatch)
    assert ct.cut_flows(object(), [source]) == 0  # type: ignore[arg-type]
    assert computed == [] and sent == []
    dumps[4] = [
        message("100.64.0.1", "192.0.2.1", socket.IPPROTO_UDP, 53),
        message("100.64.0.2", "192.0.2.1", socket.IPPROTO_UDP, 53),
    ]
    assert ct.cut_flows(object(), [source]) == 1  # type: ignore[arg-type]
    assert computed == [1] and len(sent) == 1


def test_no_dump_when_the_namespace_tracks_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stats request says 0: the host-wide walk is skipped; None (unknown): it runs."""
    walked: list[int] = []
    monkeypatch.setattr(ct, "_dump", lambda sock, version: walked.append(version) or iter(()))
    cut = ct.Cut(frozenset({Prefix.parse("100.64.0.1/32")}), frozenset(), frozenset())
    monkeypatch.setattr(ct, "entries", lambda sock: 0)
    assert ct.cut_flows(object(), [cut]) == 0  # type: ignore[arg-type]
    assert walked == []
    monkeypatch.setattr(ct, "entries", lambda sock: None)
    assert ct.cut_flows(object(), [cut]) == 0  # type: ignore[arg-type]
    assert walked == [4]


def test_held_keys_match_what_holds_would_cut_without_copying_the_keys() -> None:
    """The full-sync cut (lookups in the state's map) and the delta cut (sets) agree."""
    hour = NOW + timedelta(hours=1)
    entries = [
        Quarantine(Prefix.parse("100.64.0.1"), QuarantineMode.BLOCK),
        Quarantine(Prefix.parse("100.64.0.2"), QuarantineMode.SMTP, expires=hour),
        Quarantine(Prefix.parse("100.64.0.3"), QuarantineMode.WALLED_GARDEN),
        Quarantine(
            Prefix.parse("100.64.0.4"), QuarantineMode.BLOCK, expires=NOW - timedelta(seconds=1)
        ),
        Quarantine(Prefix.parse("2001:db8:0:100::/56"), QuarantineMode.SMTP),
        Quarantine(Prefix.parse("100.66.0.0/24"), QuarantineMode.BLOCK),  # a range hold
    ]
    as_map = {q.key: q for q in entries}
    flows = [
        ("100.64.0.1", "192.0.2.1", socket.IPPROTO_UDP, 53),
        ("192.0.2.1", "100.64.0.1", socket.IPPROTO_TCP, 80),
        ("100.64.0.2", "192.0.2.1", socket.IPPROTO_TCP, 25),
        ("100.64.0.2", "192.0.2.1", socket.IPPROTO_TCP, 443),
        ("100.64.0.3", "192.0.2.1", socket.IPPROTO_TCP, 25),
        ("100.64.0.4", "192.0.2.1", socket.IPPROTO_UDP, 53),
        ("2001:db8:0:1ff::9", "2001:db8:ffff::1", socket.IPPROTO_TCP, 587),
        ("2001:db8:0:1ff::9", "2001:db8:ffff::1", socket.IPPROTO_TCP, 22),
        ("100.66.0.77", "192.0.2.1", socket.IPPROTO_UDP, 123),
        ("100.64.0.9", "192.0.2.1", socket.IPPROTO_TCP, 25),
    ]
    for quarantines in (as_map, KeyMap(as_map.items())):
        held = flow_cut.HeldKeys(quarantines, NOW, MAIL)
        cut = holds(entries, MAIL, NOW)
        for flow in flows:
            assert doomed_by(held, *flow) == doomed(cut, *flow), flow


def doomed_by(targets: ct.Targets, src: str, dst: str, proto: int, port: int) -> bool:
    version = 6 if ":" in src else 4
    entry = ct._decode(message(src, dst, proto, port), version)
    assert entry is not None
    everything, mail = targets.matchers()
    return ct._doomed(entry, everything, mail, targets.mail_ports)
