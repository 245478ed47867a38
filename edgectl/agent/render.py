"""DesiredState -> nft transaction for ``table inet edgectl``, and nothing else.

The packet path is shaped by what nftables costs (ARCHITECTURE.md):

* packets of established flows leave at the first rule, so non-mail traffic
  pays one conntrack check and mail traffic one more port check;
* quarantines and exemptions live in hash sets of exact subscriber keys
  (IPv4 /32, IPv6 saddr masked to the pool's delegated length), so a change
  is an element add/delete whose cost does not grow with the set;
* pools, relays and prefix quarantines are interval sets: they change
  rarely, and a change to them is a full sync;
* rate and concurrency meters are dynamic sets with a size bound.

Because established flows are accepted first, a new quarantine holds new
connections; for ``block`` and ``smtp`` the agent then deletes the key's
conntrack entries (edgectl.agent.flow_cut), so open flows meet the hold too.
"""

from __future__ import annotations

import hashlib
import math
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from edgectl.agent.transaction import TABLE, Transaction
from edgectl.model.delta import StateDelta, patch
from edgectl.model.policy import (
    BlockAction,
    DesiredState,
    Hook,
    Pool,
    PoolKind,
    Quarantine,
    QuarantineMode,
    RateLimitProfile,
)
from edgectl.model.pool_map import PoolMap
from edgectl.model.prefix import Prefix, mask_text, merge

LOG_PREFIX = "edgectl"
# The kernel walks every element of a timeout hash set each gc-interval
# (default 1 s): with 1M keys that is ~0.2 of a core, all the time.  An
# expired element stops matching at once whatever the interval (lookups
# check the expiry), so a longer one only delays freeing its memory.
KEY_GC_SECONDS = 60
MODES = (QuarantineMode.BLOCK, QuarantineMode.WALLED_GARDEN, QuarantineMode.SMTP)
QUARANTINED = "q_any"  # every exact quarantine key, whatever its mode
# How long a connection held back by a cap is remembered: longer than TCP's
# SYN retries take to give up on the first few resends (1, 3, 7 s).
DEFERRED_SECONDS = 30

Counters = Mapping[str, tuple[int, int]]


def mode_id(mode: QuarantineMode) -> str:
    return mode.value.replace("-", "_")


def _family_keyword(version: int) -> str:
    return "ip" if version == 4 else "ip6"


def _addr_type(version: int) -> str:
    return "ipv4_addr" if version == 4 else "ipv6_addr"


def _ports(ports: Iterable[int]) -> str:
    listed = sorted(ports)
    return str(listed[0]) if len(listed) == 1 else "{ " + ", ".join(map(str, listed)) + " }"


def _seconds_left(expires: datetime | None, now: datetime) -> int | None:
    """Whole seconds until ``expires`` (rounded up); 0 if already past; None if never."""
    if expires is None:
        return None
    return max(0, math.ceil((expires - now).total_seconds()))


@dataclass(frozen=True)
class Slot:
    """Which kernel set holds a subscriber key, and how the key is written there."""

    set_name: str
    element: str
    interval: bool


def exact_set(kind: str, version: int, length: int) -> str:
    """``q_block_4``, ``q_smtp_6_56``, ``exempt_6_64``: one hash set per key length."""
    return f"{kind}_4" if version == 4 else f"{kind}_6_{length}"


def quarantine_slot(key: Prefix, mode: QuarantineMode, lengths: tuple[int, ...]) -> Slot:
    kind = f"q_{mode_id(mode)}"
    if (key.is_host and key.version == 4) or (key.version == 6 and key.length in set(lengths)):
        return Slot(exact_set(kind, key.version, key.length), key.address, interval=False)
    # A key that is not one subscriber (a whole block of unassigned space)
    # needs an interval map; those are few, so their cost stays small.
    return Slot(f"q_ranges_{key.version}", f"{key} : jump quarantine_{mode_id(mode)}", True)


def exemption_slot(key: Prefix, lengths: tuple[int, ...]) -> Slot:
    if (key.is_host and key.version == 4) or (key.version == 6 and key.length in set(lengths)):
        return Slot(exact_set("exempt", key.version, key.length), key.address, interval=False)
    return Slot(f"exempt_ranges_{key.version}", str(key), interval=True)


def range_families(quarantines: Mapping[Prefix, Quarantine], lengths: tuple[int, ...]) -> set[int]:
    """IP versions with at least one prefix (interval) quarantine, expired or not."""
    return {
        key.version
        for key, q in quarantines.items()
        if quarantine_slot(key, q.mode, lengths).interval
    }


def needs_full_sync(old: DesiredState, delta: StateDelta) -> bool:
    """Whether a delta changes the chains, not only set elements."""
    if delta.structure is not None:
        return True
    lengths = old.delegated_lengths()
    touched = [*delta.quarantines.removals, *(q.key for q in delta.quarantines.upserts)]
    if not any(quarantine_slot(key, QuarantineMode.BLOCK, lengths).interval for key in touched):
        return False  # cheap answer for the common case: exact keys only
    new = patch(old, delta)
    return range_families(old.quarantines, lengths) != range_families(new.quarantines, lengths)


def _with_timeout(element: str, seconds: int | None) -> str:
    if seconds is None:
        return element
    # "key timeout Ns" for sets, "key timeout Ns : verdict" for maps.
    key, colon, verdict = element.partition(" : ")
    return f"{key} timeout {seconds}s{colon}{verdict}"


def _tag(chain: str, rule: str) -> str:
    """A rule's identity, stored as its comment, so read-back can compare rules.

    nft prints rules back in its own normal form; comparing that with what
    we rendered would mean re-implementing nft's printer.
    """
    digest = hashlib.sha256(f"{chain}\0{rule}".encode()).hexdigest()[:12]
    return f'comment "ectl:{digest}"'


class _Builder:
    """Accumulates the body of ``table inet edgectl { ... }``."""

    def __init__(self, state: DesiredState, now: datetime, counters: Counters) -> None:
        self.state = state
        self.now = now
        self.counters = counters
        self.settings = state.settings
        self.lengths = state.delegated_lengths()
        self.blocks: list[str] = []
        self.chain_tags: dict[str, list[str]] = {}
        self.set_elements: dict[str, list[str]] = {}
        self.counter_names: list[str] = []
        self.profiles = {p.name: p for p in state.rate_limits}
        self.pool_map = PoolMap((prefix, pool) for pool in state.pools for prefix in pool.prefixes)
        # ct count (the concurrency caps) is the only thing that needs
        # conntrack once non-mail is untracked.  Without it the table holds
        # no ct expression at all, so the kernel registers no conntrack or
        # defrag hooks for it: those hooks, not the lookups, are what an
        # untracked packet still paid (bench/forwarding.py, gateway f vs s).
        self.conntrack = self.settings.track_non_mail or any(
            self.profiles[pool.rate_limit].concurrent is not None
            or self.profiles[pool.rate_limit].per_destination is not None
            for pool in state.pools
            if pool.rate_limit is not None
        )

    # -- objects ---------------------------------------------------------

    def counter(self, name: str) -> None:
        self.counter_names.append(name)
        packets, octets = self.counters.get(name, (0, 0))
        self.blocks.append(f"\tcounter {name} {{\n\t\tpackets {packets} bytes {octets}\n\t}}")

    def set(
        self, name: str, lines: list[str], elements: Iterable[str] = (), kind: str = "set"
    ) -> None:
        listed = list(elements)
        self.set_elements[name] = listed
        body = "".join(f"\t\t{line}\n" for line in lines)
        if listed:
            joined = ",\n\t\t\t".join(listed)
            body += f"\t\telements = {{\n\t\t\t{joined}\n\t\t}}\n"
        self.blocks.append(f"\t{kind} {name} {{\n{body}\t}}")

    def chain(
        self, name: str, rules: list[str], base_hook: str | None = None, priority: str = "filter"
    ) -> None:
        lines = []
        if base_hook is not None:
            lines.append(f"type filter hook {base_hook} priority {priority}; policy accept;")
        tags = []
        for rule in rules:
            tag = _tag(name, rule)
            tags.append(tag.split('"')[1])
            lines.append(f"{rule} {tag}")
        self.chain_tags[name] = tags
        body = "".join(f"\t\t{line}\n" for line in lines)
        self.blocks.append(f"\tchain {name} {{\n{body}\t}}")

    # -- verdicts ----------------------------------------------------------

    def log(self, what: str) -> str:
        """A rate-limited log rule: evidence for abuse staff, never a log flood.

        It must be a rule of its own: ``limit`` stops the rule when over the
        rate, and the verdict after it would be skipped with it.
        """
        rate = self.settings.log_per_second
        group = "" if self.settings.log_group is None else f" group {self.settings.log_group}"
        limit = f"limit rate {rate}/second burst {rate * 2} packets"
        return f'{limit} log prefix "{LOG_PREFIX} {what}: "{group}'

    def refuse(self, counter: str, *, shadow: bool, tcp_only: bool) -> str:
        """Count, then refuse - or, in shadow mode, only count."""
        if shadow:
            return f"counter name {counter}"
        if self.settings.block_action is BlockAction.RESET and tcp_only:
            return f"counter name {counter} reject with tcp reset"
        return f"counter name {counter} drop"

    # -- the table ---------------------------------------------------------

    def build(self) -> None:
        state = self.state
        profiles = self.profiles
        self._counters(profiles)
        self._address_sets()
        self._quarantine_sets()
        self._exemption_sets()
        for pool in state.pools:
            self._meter_sets(pool, profiles)
        self._deferred_sets()
        self._quarantine_chains()
        for profile in state.rate_limits:
            self._limit_chains(profile)
        for pool in state.pools:
            self._pool_chains(pool, profiles)
        self.chain("mail", ["ip saddr vmap @pools_4", "ip6 saddr vmap @pools_6"])
        self._dispatch_chains()
        self._untracked_chains()
        for hook in self.settings.hooks:
            self.chain(hook.value, self._gate_rules(), base_hook=hook.value)

    def _counters(self, profiles: Mapping[str, RateLimitProfile]) -> None:
        for mode in MODES:
            self.counter(f"quarantine_{mode_id(mode)}")
        for pool in self.state.pools:
            if pool.kind is PoolKind.DYNAMIC:
                self.counter(f"op25b_{pool.name}")
        for profile in profiles.values():
            self.counter(f"rate_{profile.name}")
            if profile.concurrent is not None:
                self.counter(f"concurrent_{profile.name}")
            if profile.per_destination is not None:
                self.counter(f"destination_{profile.name}")

    def _interval_set(self, name: str, version: int, prefixes: Iterable[Prefix]) -> None:
        merged = merge(p for p in prefixes if p.version == version)
        self.set(name, [f"type {_addr_type(version)}", "flags interval"], map(str, merged))

    def _address_sets(self) -> None:
        state, settings = self.state, self.settings
        relays = [p for relay in state.relays for p in relay.prefixes]
        for version in (4, 6):
            self._interval_set(f"relays_{version}", version, relays)
            self._interval_set(f"resolvers_{version}", version, settings.resolvers)
            self._interval_set(f"portal_{version}", version, settings.portal)
            # Pools may nest (a static /24 in a dynamic /16): the most
            # specific prefix wins, as disjoint intervals (nft refuses
            # overlapping elements).  Every pool takes part, so a nested pool
            # without a chain (infrastructure, a static pool without limits)
            # keeps its space out of the outer pool's chain.  Adjacent
            # prefixes of one pool merge: fewer elements to carry.
            elements = [
                f"{prefix} : jump pool_{pool.name}"
                for prefix, pool in self.pool_map.prefixes()
                if prefix.version == version
                and pool.kind is not PoolKind.INFRASTRUCTURE
                and self._pool_has_chain(pool)
            ]
            self.set(
                f"pools_{version}",
                [f"type {_addr_type(version)} : verdict", "flags interval"],
                elements,
                kind="map",
            )

    def _pool_has_chain(self, pool: Pool) -> bool:
        return pool.kind is PoolKind.DYNAMIC or pool.rate_limit is not None

    def _keyed_sets(
        self,
        entries: Mapping[Prefix, Any],
        kind_of: Mapping[Any, str],
        ranges_name: str,
        range_element: Callable[[Prefix, Any], str],
        union: str | None = None,
    ) -> None:
        """Hash sets of exact keys plus one interval set/map for the rest.

        ``kind_of`` maps an entry's mode (None for exemptions) to its set
        family.  This is the hot loop of a full sync with a million keys:
        Slot objects, Prefix.address and per-entry calls would triple its
        cost, so it works on the raw tuple and precomputed lists.
        """
        lengths = self.lengths
        now = self.now
        ntoa = socket.inet_ntoa
        exact: dict[str, list[str]] = {}
        v4_target: dict[Any, list[str]] = {}
        v6_target: dict[tuple[Any, int], list[str]] = {}
        for mode, kind in kind_of.items():
            v4_target[mode] = exact.setdefault(exact_set(kind, 4, 32), [])
            for length in lengths:
                v6_target[mode, length] = exact.setdefault(exact_set(kind, 6, length), [])
        # The union of all modes: one lookup finds out whether a packet's
        # source is held at all, which is all a non-held packet pays.
        union4: list[str] = exact.setdefault(exact_set(union, 4, 32), []) if union else []
        union6 = {
            length: exact.setdefault(exact_set(union, 6, length), []) if union else []
            for length in lengths
        }
        ranges: dict[int, list[tuple[int, str]]] = {4: [], 6: []}
        for key, entry in entries.items():
            version, value, length = key
            expires = entry.expires
            seconds = None
            if expires is not None:
                seconds = math.ceil((expires - now).total_seconds())
                if seconds <= 0:
                    continue  # the kernel would time it out at once
            mode = getattr(entry, "mode", None)
            if version == 4 and length == 32:
                target, also = v4_target[mode], union4
                element = ntoa(value.to_bytes(4, "big"))
            elif version == 6 and length in lengths:
                target, also = v6_target[mode, length], union6[length]
                element = key.address
            else:
                ranges[version].append((value, _with_timeout(range_element(key, entry), seconds)))
                continue
            text = element if seconds is None else f"{element} timeout {seconds}s"
            target.append(text)
            if union:
                also.append(text)
        for name, elements in exact.items():
            version = 4 if name.endswith("_4") else 6
            self.set(
                name,
                [f"type {_addr_type(version)}", "flags timeout", f"gc-interval {KEY_GC_SECONDS}s"],
                elements,
            )
        is_map = ranges_name.startswith("q_")
        for version, items in ranges.items():
            data = " : verdict" if is_map else ""
            self.set(
                f"{ranges_name}_{version}",
                [f"type {_addr_type(version)}{data}", "flags interval,timeout"],
                (text for _, text in sorted(items)),
                kind="map" if is_map else "set",
            )

    def _quarantine_sets(self) -> None:
        self._keyed_sets(
            self.state.quarantines,
            {mode: f"q_{mode_id(mode)}" for mode in MODES},
            "q_ranges",
            lambda key, entry: quarantine_slot(key, entry.mode, self.lengths).element,
            union=QUARANTINED,
        )

    def _exemption_sets(self) -> None:
        self._keyed_sets(
            self.state.exemptions,
            {None: "exempt"},
            "exempt_ranges",
            lambda key, entry: exemption_slot(key, self.lengths).element,
        )

    def _meter_sets(self, pool: Pool, profiles: Mapping[str, RateLimitProfile]) -> None:
        if pool.rate_limit is None:
            return
        profile = profiles[pool.rate_limit]
        size = self.settings.meter_size
        # A bucket forgotten before it refills would hand out a fresh burst;
        # after a full refill forgetting it changes nothing.
        refill = max(60, math.ceil(60 * profile.burst / profile.new_per_minute) + 1)
        for version in sorted({p.version for p in pool.prefixes}):
            addr = _addr_type(version)
            self.set(
                f"rate_{pool.name}_{version}",
                [f"type {addr}", f"size {size}", "flags dynamic,timeout", f"timeout {refill}s"],
            )
            # ct count sets drop a key by themselves once its connections end.
            if profile.concurrent is not None:
                self.set(
                    f"conc_{pool.name}_{version}",
                    [f"type {addr}", f"size {size}", "flags dynamic"],
                )
            if profile.per_destination is not None:
                self.set(
                    f"dest_{pool.name}_{version}",
                    [f"type {addr} . {addr}", f"size {size}", "flags dynamic"],
                )

    def _quarantine_chains(self) -> None:
        settings = self.settings
        mail = _ports(settings.mail_ports)
        for mode in MODES:
            name = f"quarantine_{mode_id(mode)}"
            evidence = self.log(f"quarantine={mode.value}")
            if mode is QuarantineMode.SMTP:
                rules = [
                    f"tcp dport {mail} {evidence}",
                    f"tcp dport {mail} {self.refuse(name, shadow=False, tcp_only=True)}",
                ]
            elif mode is QuarantineMode.WALLED_GARDEN:
                rules = [
                    "meta l4proto { tcp, udp } th dport 53 ip daddr @resolvers_4 accept",
                    "meta l4proto { tcp, udp } th dport 53 ip6 daddr @resolvers_6 accept",
                    "tcp dport { 80, 443 } ip daddr @portal_4 accept",
                    "tcp dport { 80, 443 } ip6 daddr @portal_6 accept",
                    evidence,
                    self.refuse(name, shadow=False, tcp_only=False),
                ]
            else:
                rules = [evidence, self.refuse(name, shadow=False, tcp_only=False)]
            self.chain(name, rules)

    def _limit_chains(self, profile: RateLimitProfile) -> None:
        kinds = [("rate", "ratelimit")]
        if profile.concurrent is not None:
            kinds.append(("concurrent", "concurrency"))
        if profile.per_destination is not None:
            kinds.append(("destination", "destinationlimit"))
        shadow = " shadow" if profile.shadow else ""
        for counter, label in kinds:
            rules = [
                self.log(f"{label} profile={profile.name}{shadow}"),
                self.refuse(f"{counter}_{profile.name}", shadow=profile.shadow, tcp_only=True),
            ]
            if counter != "rate" and not profile.shadow:
                rules = [*_deferral_rules(), *rules]
            self.chain(f"over_{counter}_{profile.name}", rules)

    def _deferred_sets(self) -> None:
        """Connections whose first SYN a cap held back (see ``_deferral_rules``)."""
        if not any(
            not p.shadow and (p.concurrent is not None or p.per_destination is not None)
            for p in self.profiles.values()
        ):
            return
        for version in (4, 6):
            addr = _addr_type(version)
            self.set(
                f"deferred_{version}",
                [
                    f"type {addr} . inet_service . {addr} . inet_service",
                    f"size {self.settings.meter_size}",
                    "flags dynamic,timeout",
                    f"timeout {DEFERRED_SECONDS}s",
                ],
            )

    def _pool_chains(self, pool: Pool, profiles: Mapping[str, RateLimitProfile]) -> None:
        if not self._pool_has_chain(pool):
            return
        versions = sorted({p.version for p in pool.prefixes})
        rules: list[str] = []
        if pool.kind is PoolKind.DYNAMIC:
            rules.append(f"tcp dport {_ports(self.settings.op25b_ports)} jump op25b_{pool.name}")
            self._op25b_chain(pool, versions)
        if pool.rate_limit is not None:
            profile = profiles[pool.rate_limit]
            for version in versions:
                key = self._subscriber_expr(pool, version)
                daddr = f"{_family_keyword(version)} daddr"
                per_minute = f"{profile.new_per_minute}/minute burst {profile.burst} packets"
                rules.append(
                    f"update @rate_{pool.name}_{version} {{ {key} limit rate over {per_minute} }}"
                    f" jump over_rate_{profile.name}"
                )
                # Per destination first: every ct count rule a SYN reaches
                # adds it to that list, so a SYN refused here never enters
                # the subscriber's concurrency list.
                if profile.per_destination is not None:
                    rules.append(
                        f"add @dest_{pool.name}_{version} {{ {key} . {daddr} ct count over "
                        f"{profile.per_destination} }} jump over_destination_{profile.name}"
                    )
                if profile.concurrent is not None:
                    rules.append(
                        f"add @conc_{pool.name}_{version} {{ {key} ct count over "
                        f"{profile.concurrent} }} jump over_concurrent_{profile.name}"
                    )
        self.chain(f"pool_{pool.name}", rules)

    def _subscriber_expr(self, pool: Pool, version: int) -> str:
        """The packet's subscriber key: saddr, masked to the delegation for IPv6."""
        if version == 4:
            return "ip saddr"
        return f"ip6 saddr & {mask_text(6, pool.key_length(6))}"

    def _op25b_chain(self, pool: Pool, versions: list[int]) -> None:
        rules = []
        for version in versions:
            family = _family_keyword(version)
            if version == 4:
                rules.append("ip saddr @exempt_4 return")
            else:
                length = pool.key_length(6)
                rules.append(f"{self._subscriber_expr(pool, 6)} @exempt_6_{length} return")
            rules.append(f"{family} saddr @exempt_ranges_{version} return")
            rules.append(f"{family} daddr @relays_{version} return")
        shadow = " shadow" if pool.op25b_shadow else ""
        rules.append(self.log(f"op25b pool={pool.name}{shadow}"))
        rules.append(self.refuse(f"op25b_{pool.name}", shadow=pool.op25b_shadow, tcp_only=True))
        self.chain(f"op25b_{pool.name}", rules)

    def _dispatch_chains(self) -> None:
        """``quarantine_4``, ``quarantine_6_56``: which mode a held key is in."""
        keys = [(4, 32, "ip saddr")]
        keys += [(6, n, f"ip6 saddr & {mask_text(6, n)}") for n in self.lengths]
        for version, length, expr in keys:
            rules = []
            for mode in MODES:
                kind = f"q_{mode_id(mode)}"
                # goto: the mode's chain returns straight to the base chain.
                target = f"quarantine_{mode_id(mode)}"
                rules.append(f"{expr} @{exact_set(kind, version, length)} goto {target}")
            self.chain(exact_set("quarantine", version, length), rules)
        if self.settings.track_non_mail:
            self._toward_chains(keys)

    def _toward_chains(self, keys: list[tuple[int, int, str]]) -> None:
        """``quarantine_to_4``: new packets *to* a held key (tracked mode only).

        The agent cuts a new hold's open flows by deleting their conntrack
        entries (edgectl.agent.flow_cut).  The held side's next packet is
        then new and meets the hold rules; but if the other side's packet
        comes first (a download, a server's reply), conntrack starts a new
        entry from it, and the held side's packets would be its established
        replies.  These rules drop that first packet.  Only packets that are
        not established get here, so established traffic pays nothing.
        """
        mail = _ports(self.settings.mail_ports)
        for version, length, expr in keys:
            to = expr.replace("saddr", "daddr")
            block = exact_set(f"q_{mode_id(QuarantineMode.BLOCK)}", version, length)
            smtp = exact_set(f"q_{mode_id(QuarantineMode.SMTP)}", version, length)
            self.chain(
                exact_set("quarantine_to", version, length),
                [
                    f"{to} @{block} goto quarantine_{mode_id(QuarantineMode.BLOCK)}",
                    f"tcp sport {mail} {to} @{smtp} counter name quarantine_smtp drop",
                ],
            )

    def _gate_rules(self) -> list[str]:
        established = "ct state established,related accept"
        held = [f"ip saddr @{exact_set(QUARANTINED, 4, 32)} jump quarantine_4"]
        for length in self.lengths:
            mask = mask_text(6, length)
            name = exact_set(QUARANTINED, 6, length)
            held.append(f"ip6 saddr & {mask} @{name} jump {exact_set('quarantine', 6, length)}")
        # An interval lookup costs ~0.4 us a packet even on an empty map, so
        # the prefix-quarantine rule exists only while such quarantines do.
        ranges = range_families(self.state.quarantines, self.lengths)
        held += [f"{_family_keyword(v)} saddr vmap @q_ranges_{v}" for v in (4, 6) if v in ranges]
        mail = f"tcp dport {_ports(self.settings.mail_ports)} jump mail"
        if self.settings.track_non_mail:
            # Established flows leave first: one conntrack check a packet.
            toward = [f"ip daddr @{exact_set(QUARANTINED, 4, 32)} jump quarantine_to_4"]
            for length in self.lengths:
                mask = mask_text(6, length)
                name = exact_set(QUARANTINED, 6, length)
                toward.append(
                    f"ip6 daddr & {mask} @{name} jump {exact_set('quarantine_to', 6, length)}"
                )
            return [established, *held, *toward, mail]
        # Untracked, a TCP packet that is not an opening SYN leaves early,
        # on its flags alone: as in the tracked mode, quarantines and limits
        # act on new connections, and a connection costs one full check.
        # Other protocols are checked packet by packet.  Mail SYNs then feed
        # the ct count caps where there are any (mail is tracked for them).
        # A blocked subscriber is the exception: "block" drops everything,
        # bare ACK or RST floods included (tracked, those are "new" or
        # "invalid" and checked too).  One lookup a packet, in the block set
        # only.
        block = f"q_{mode_id(QuarantineMode.BLOCK)}"
        blocked = [f"ip saddr @{exact_set(block, 4, 32)} goto quarantine_block"]
        blocked += [
            f"ip6 saddr & {mask_text(6, n)} @{exact_set(block, 6, n)} goto quarantine_block"
            for n in self.lengths
        ]
        not_opening = "tcp flags & (syn | ack) != syn accept"
        if self.conntrack:
            mail = f"tcp dport {_ports(self.settings.mail_ports)} ct state new jump mail"
        return [*blocked, not_opening, *held, mail]

    def _untracked_chains(self) -> None:
        """notrack at raw priority for everything that is not mail."""
        if self.settings.track_non_mail or not self.conntrack:
            return
        mail = _ports(self.settings.mail_ports)
        rules = [
            f"tcp dport != {mail} tcp sport != {mail} notrack",
            "meta l4proto != tcp notrack",
        ]
        hooks = {Hook.FORWARD: "prerouting", Hook.OUTPUT: "output"}
        for hook in self.settings.hooks:
            raw_hook = hooks[hook]
            self.chain(f"untracked_{raw_hook}", rules, base_hook=raw_hook, priority="raw")


def _deferral_rules() -> list[str]:
    """First look of a concurrency cap: hold the SYN back once, judge its resend.

    ``ct count`` counts what nf_conncount's list holds, and the kernel
    cleans a list (drops closed and never-confirmed connections) at most
    once a jiffy (4 ms at HZ=250): a sender that closes one connection and
    opens the next within a jiffy is counted with the one it closed, and a
    SYN refused a moment ago still holds its place for up to two jiffies.
    A sequential SMTP dialogue takes ~0.4 ms on a LAN, so a count over the
    cap is not proof.  The first SYN over it is dropped unanswered and its
    4-tuple remembered; TCP resends it after ~1 s, when the list has been
    cleaned, and only a resend that still finds the cap full is refused
    (reset), logged and counted.  Legitimate senders wait a second at
    worst; nobody is refused on a stale count.
    """
    rules = []
    for version in (4, 6):
        family = _family_keyword(version)
        flow = f"{family} saddr . tcp sport . {family} daddr . tcp dport"
        rules.append(f"{flow} != @deferred_{version} add @deferred_{version} {{ {flow} }} drop")
    return rules


@dataclass(frozen=True)
class Rendered:
    transaction: Transaction
    # What read-back compares against: rule comments per chain in order,
    # every set's elements as written, the named counters.
    chain_tags: dict[str, list[str]]
    set_elements: dict[str, list[str]]
    counter_names: list[str]


def render_full(state: DesiredState, now: datetime, counters: Counters | None = None) -> Rendered:
    """The whole table, replacing whatever is there in one transaction.

    ``add table`` then ``delete table`` makes the delete safe when the table
    does not exist yet; named counters are carried over by value (``counters``:
    what the kernel has, else the agent's last reading) so that a resync does
    not reset what Prometheus has been scraping.
    """
    builder = _Builder(state, now, counters or {})
    builder.build()
    body = "\n\n".join(builder.blocks)
    # No revision in the comment: deltas do not rewrite it, so it would go
    # stale; the applied revision is in the state file and the reports.
    comment = f'\tcomment "managed by edgectl: gateway {state.gateway}"'
    transaction = Transaction(summary=f"full sync to revision {state.revision}")
    transaction.add(f"add table {TABLE}")
    transaction.add(f"delete table {TABLE}")
    transaction.add(f"table {TABLE} {{\n{comment}\n\n{body}\n}}")
    return Rendered(transaction, builder.chain_tags, builder.set_elements, builder.counter_names)


def render_delta(old: DesiredState, delta: StateDelta, now: datetime) -> Transaction:
    """Element adds and deletes turning the kernel from ``old`` to ``old + delta``.

    Every touched key is first added bare, then deleted, then added as
    wanted: the add makes the delete safe whether or not the element is
    still there (a kernel timeout may have removed it), and the final add
    sets the new timeout, which adding an existing element would not.
    """
    if needs_full_sync(old, delta):
        raise ValueError("a structural change needs a full sync, not a delta")
    lengths = old.delegated_lengths()
    ensure: dict[str, list[str]] = {}
    final: dict[str, list[tuple[str, int | None]]] = {}
    ranges_touched: set[str] = set()

    def touch(slot: Slot) -> None:
        if slot.interval:
            ranges_touched.add(slot.set_name)
        else:
            ensure.setdefault(slot.set_name, []).append(slot.element)

    def place(slot: Slot, seconds: int | None) -> None:
        if slot.interval or seconds == 0:
            return
        final.setdefault(slot.set_name, []).append((slot.element, seconds))

    def union_slot(slot: Slot, key: Prefix) -> Slot | None:
        if slot.interval:
            return None
        return Slot(exact_set(QUARANTINED, key.version, key.length), slot.element, False)

    for q_key in delta.quarantines.removals:
        if q_key in old.quarantines:
            slot = quarantine_slot(q_key, old.quarantines[q_key].mode, lengths)
            touch(slot)
            if (held := union_slot(slot, q_key)) is not None:
                touch(held)
    for quarantine in delta.quarantines.upserts:
        previous: Quarantine | None = old.quarantines.get(quarantine.key)
        if previous is not None:
            touch(quarantine_slot(previous.key, previous.mode, lengths))
        slot = quarantine_slot(quarantine.key, quarantine.mode, lengths)
        touch(slot)
        seconds = _seconds_left(quarantine.expires, now)
        place(slot, seconds)
        if (held := union_slot(slot, quarantine.key)) is not None:
            touch(held)
            place(held, seconds)
    for e_key in delta.exemptions.removals:
        touch(exemption_slot(e_key, lengths))
    for exemption in delta.exemptions.upserts:
        slot = exemption_slot(exemption.key, lengths)
        touch(slot)
        place(slot, _seconds_left(exemption.expires, now))

    transaction = Transaction(summary=f"delta r{delta.from_revision}->r{delta.to_revision}")
    for name, elements in ensure.items():
        unique = [(key, None) for key in dict.fromkeys(elements)]
        transaction.keys("add", name, unique)
        transaction.keys("delete", name, unique)
    for name, keyed in final.items():
        transaction.keys("add", name, keyed)
    if ranges_touched:
        # Interval maps are small; rewriting one whole avoids nft's refusal
        # to re-add a map key with a different verdict.
        _rewrite_ranges(transaction, ranges_touched, patch(old, delta), lengths, now)
    return transaction


def _rewrite_ranges(
    transaction: Transaction,
    names: set[str],
    state: DesiredState,
    lengths: tuple[int, ...],
    now: datetime,
) -> None:
    quarantines, exemptions = state.quarantines, state.exemptions
    wanted: dict[str, list[str]] = {name: [] for name in names}
    for key, q in quarantines.items():
        slot = quarantine_slot(key, q.mode, lengths)
        seconds = _seconds_left(q.expires, now)
        if slot.set_name in wanted and seconds != 0:
            wanted[slot.set_name].append(_with_timeout(slot.element, seconds))
    for key, e in exemptions.items():
        slot = exemption_slot(key, lengths)
        seconds = _seconds_left(e.expires, now)
        if slot.set_name in wanted and seconds != 0:
            wanted[slot.set_name].append(_with_timeout(slot.element, seconds))
    for name in sorted(names):
        kind = "map" if name.startswith("q_") else "set"
        transaction.add(f"flush {kind} {TABLE} {name}")
        transaction.elements("add", name, wanted[name])
