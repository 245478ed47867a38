"""DesiredState -> nft transaction for ``table inet edgectl``, and nothing else.

The packet path is shaped by what nftables costs (ARCHITECTURE.md):

* packets of established flows leave at the first rule, so non-mail traffic
  pays one conntrack check and mail traffic one more port check;
* quarantines and exemptions live in hash sets of exact subscriber keys
  (IPv4 /32, IPv6 saddr masked to the pool's delegated length), one
  element per key, placed by ``keys.KeyLayout`` alone; a change is an
  element add/delete whose cost does not grow with the set;
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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from edgectl.agent.keys import (
    EXEMPT,
    MODE_LAYOUT,
    KeyLayout,
    Kind,
    layout_for,
    layout_of,
    needs_full_sync,
    ranges_set,
    seconds_left,
    steer_ranges_set,
)
from edgectl.agent.table import SPEC
from edgectl.agent.transaction import Transaction
from edgectl.model.delta import StateDelta, patch
from edgectl.model.policy import (
    BlockAction,
    DesiredState,
    GatewaySettings,
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
# How long a connection held back by a cap is remembered: longer than TCP's
# SYN retries take to give up on the first few resends (1, 3, 7 s).
DEFERRED_SECONDS = 30
# The chain the base chains send IPv6 packets to (``_gate_rules``).
GATE_6 = "gate_6"
Counters = Mapping[str, tuple[int, int]]
V = TypeVar("V")


def _family_keyword(version: int) -> str:
    return "ip" if version == 4 else "ip6"


def _addr_type(version: int) -> str:
    return "ipv4_addr" if version == 4 else "ipv6_addr"


def _ports(ports: Iterable[int]) -> str:
    listed = sorted(ports)
    return str(listed[0]) if len(listed) == 1 else "{ " + ", ".join(map(str, listed)) + " }"


def _tag(chain: str, rule: str) -> str:
    """A rule's identity, stored as its comment, so read-back can compare rules.

    nft prints rules back in its own normal form; comparing that with what
    we rendered would mean re-implementing nft's printer.
    """
    digest = hashlib.sha256(f"{chain}\0{rule}".encode()).hexdigest()[:12]
    return f'comment "ectl:{digest}"'


class _Builder:
    """Accumulates the body of ``table inet edgectl { ... }``."""

    def __init__(
        self, state: DesiredState, now: datetime, counters: Counters, keys: bool = True
    ) -> None:
        self.state = state
        # False: the exact-key hash sets are declared empty (render_keys
        # fills them in a second transaction).
        self.with_keys = keys
        self.now = now
        self.counters = counters
        self.settings = state.settings
        self.lengths = state.delegated_lengths()
        self.keys = KeyLayout(self.lengths)
        # IP versions with prefix quarantines: learnt while placing the keys.
        self.range_families: set[int] = set()
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
        self,
        name: str,
        rules: list[str],
        base_hook: str | None = None,
        priority: str = "filter",
        chain_type: str = "filter",
    ) -> None:
        lines = []
        if base_hook is not None:
            lines.append(f"type {chain_type} hook {base_hook} priority {priority}; policy accept;")
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
        self._keyed_sets()
        for pool in state.pools:
            self._meter_sets(pool, profiles)
        self._deferred_sets()
        self._quarantine_chains()
        for profile in state.rate_limits:
            self._limit_chains(profile)
        for pool in state.pools:
            self._pool_chains(pool, profiles)
        # Each family's smtp holds, then its pools: a packet found in a pool
        # leaves by goto before the other family's rules.
        self.chain(
            "mail",
            [
                *self._held_rules("mail", version=4),
                "ip saddr vmap @pools_4",
                *self._held_rules("mail", version=6),
                "ip6 saddr vmap @pools_6",
            ],
        )
        self._untracked_chains()
        self._steer_chain()
        self.chain(GATE_6, self._family_gate(6))
        for hook in self.settings.hooks:
            self.chain(hook.value, self._gate_rules(), base_hook=hook.value)

    def _counters(self, profiles: Mapping[str, RateLimitProfile]) -> None:
        for mode in MODE_LAYOUT:
            self.counter(mode.target)
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
            if self._allowed(version):
                self._garden_allow_set(version)
            # Pools may nest (a static /24 in a dynamic /16): the most
            # specific prefix wins, as disjoint intervals (nft refuses
            # overlapping elements).  Every pool takes part, so a nested pool
            # without a chain (infrastructure, a static pool without limits)
            # keeps its space out of the outer pool's chain.  Adjacent
            # prefixes of one pool merge: fewer elements to carry.
            # goto: nothing after this map in the mail chain can match a
            # packet of this family, so the pool chain's end is the end.
            elements = [
                f"{prefix} : goto {_pool_chain(pool, version)}"
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

    def _allowed(self, version: int) -> dict[int, list[Prefix]]:
        """The garden allowlist of one family: port -> merged prefixes."""
        by_port: dict[int, list[Prefix]] = {}
        for destination in self.settings.garden_allow:
            if destination.prefix.version != version:
                continue
            for port in destination.ports:
                by_port.setdefault(port, []).append(destination.prefix)
        return {port: merge(prefixes) for port, prefixes in sorted(by_port.items())}

    def _garden_allow_set(self, version: int) -> None:
        """``garden_allow_<v>``: address . port pairs reachable from the garden.

        Declared only while the allowlist lists the family, so the rule that
        looks it up exists only then.  Prefixes are merged per port: nft
        refuses overlapping intervals in one set.
        """
        elements = [
            f"{prefix} . {port}"
            for port, prefixes in self._allowed(version).items()
            for prefix in prefixes
        ]
        self.set(
            f"garden_allow_{version}",
            [f"type {_addr_type(version)} . inet_service", "flags interval"],
            elements,
        )

    def _pool_has_chain(self, pool: Pool) -> bool:
        return pool.kind is PoolKind.DYNAMIC or pool.rate_limit is not None

    def _keyed_sets(self) -> None:
        """Every held key into the set ``KeyLayout.place`` names for it.

        The hot loop of a full sync with a million keys: one tuple-level
        call per key, no per-key object.  Expired entries are left out
        (the kernel would time them out at once).
        """
        exact: dict[str, list[str]] = {}
        ranges: dict[str, list[tuple[Prefix, str]]] = {}
        for kind, sets in self.keys.exact_sets().items():
            for version, _, name in sets:
                exact[name] = []
                ranges.setdefault(ranges_set(kind, version), [])
        fill = self.keys.fill
        quarantines, exemptions = self.state.quarantines, self.state.exemptions
        if not self.with_keys:
            # Only the prefix keys (few): they shape the base chain's rules.
            quarantines = {k: q for k, q in _ranges_only(quarantines, self.keys)}
            exemptions = {k: e for k, e in _ranges_only(exemptions, self.keys)}
        fill(quarantines.items(), None, self.now, exact, ranges)
        fill(exemptions.items(), EXEMPT, self.now, exact, ranges)
        self.range_families = {
            key[0] for name, items in ranges.items() if name.startswith("q_") for key, _ in items
        }
        for name, elements in exact.items():
            version = 4 if name.endswith("_4") else 6
            self.set(
                name,
                [f"type {_addr_type(version)}", "flags timeout", f"gc-interval {KEY_GC_SECONDS}s"],
                elements,
            )
        for name, items in ranges.items():
            is_map = name.startswith("q_")
            version = int(name[-1])
            data = " : verdict" if is_map else ""
            self.set(
                name,
                [f"type {_addr_type(version)}{data}", "flags interval,timeout"],
                (text for _, text in sorted(items)),
                kind="map" if is_map else "set",
            )

        steered = _steered(self.settings)
        if steered:
            by_version = _steer_elements(quarantines, self.keys, self.now)
            for version in steered:
                self.set(
                    steer_ranges_set(version),
                    [f"type {_addr_type(version)}", "flags interval,timeout"],
                    by_version.get(version, []),
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
            if _destination_cap(profile):
                self.set(
                    f"dest_{pool.name}_{version}",
                    [f"type {addr} . {addr}", f"size {size}", "flags dynamic"],
                )

    def _quarantine_chains(self) -> None:
        settings = self.settings
        mail = _ports(settings.mail_ports)
        for layout in MODE_LAYOUT:
            mode, name = layout.mode, layout.target
            evidence = self.log(f"quarantine={mode.value}")
            if mode is QuarantineMode.SMTP:
                rules = [
                    f"tcp dport {mail} {evidence}",
                    f"tcp dport {mail} {self.refuse(name, shadow=False, tcp_only=True)}",
                ]
            elif mode is QuarantineMode.WALLED_GARDEN:
                # Steered HTTP arrives here already DNATed (prerouting runs
                # before forward): its destination is the portal, its port
                # the portal's, so the portal rule admits it.
                web = _ports({80, 443, *([settings.steer_http_port] if settings.steering else [])})
                rules = [
                    "meta l4proto { tcp, udp } th dport 53 ip daddr @resolvers_4 accept",
                    "meta l4proto { tcp, udp } th dport 53 ip6 daddr @resolvers_6 accept",
                    f"tcp dport {web} ip daddr @portal_4 accept",
                    f"tcp dport {web} ip6 daddr @portal_6 accept",
                    *(
                        f"meta l4proto {{ tcp, udp }} {_family_keyword(v)} daddr . th dport "
                        f"@garden_allow_{v} accept"
                        for v in (4, 6)
                        if self._allowed(v)
                    ),
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
        if _destination_cap(profile):
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
        """One chain per pool and IP version: a packet walks only its own family's rules.

        ``pools_<v>`` is looked up by the packet's family already, so the
        other family's rules (every one a failed protocol check) are left out.
        """
        if not self._pool_has_chain(pool):
            return
        versions = sorted({p.version for p in pool.prefixes})
        if pool.kind is PoolKind.DYNAMIC:
            self._op25b_chain(pool, versions)
        for version in versions:
            self.chain(_pool_chain(pool, version), self._pool_rules(pool, version, profiles))

    def _pool_rules(
        self, pool: Pool, version: int, profiles: Mapping[str, RateLimitProfile]
    ) -> list[str]:
        rules: list[str] = []
        if pool.kind is PoolKind.DYNAMIC:
            rules.append(f"tcp dport {_ports(self.settings.op25b_ports)} jump op25b_{pool.name}")
        if pool.rate_limit is None:
            return rules
        profile = profiles[pool.rate_limit]
        key = self._subscriber_expr(pool, version)
        daddr = f"{_family_keyword(version)} daddr"
        per_minute = f"{profile.new_per_minute}/minute burst {profile.burst} packets"
        rules.append(
            f"update @rate_{pool.name}_{version} {{ {key} limit rate over {per_minute} }}"
            f" jump over_rate_{profile.name}"
        )
        # Per destination first: every ct count rule a SYN reaches adds it
        # to that list, so a SYN refused here never enters the subscriber's
        # concurrency list.
        if _destination_cap(profile):
            rules.append(
                f"add @dest_{pool.name}_{version} {{ {key} . {daddr} ct count over "
                f"{profile.per_destination} }} jump over_destination_{profile.name}"
            )
        if profile.concurrent is not None:
            rules.append(
                f"add @conc_{pool.name}_{version} {{ {key} ct count over "
                f"{profile.concurrent} }} jump over_concurrent_{profile.name}"
            )
        return rules

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

    def _held_rules(
        self, chain: str, every_packet: bool | None = None, *, version: int
    ) -> list[str]:
        """Rules sending held exact keys of one IP version to their mode's chain.

        For the modes ``chain`` checks; one rule (one hash lookup) per mode
        and key length; ``goto``: the mode's chain decides, and returns
        straight to the base chain.
        """
        rules = []
        for layout in MODE_LAYOUT:
            if layout.chain != chain:
                continue
            if every_packet is not None and layout.every_packet != every_packet:
                continue
            for key_version, length, name in self.keys.exact_sets()[layout.mode]:
                if key_version != version:
                    continue
                expr = "ip saddr" if version == 4 else f"ip6 saddr & {mask_text(6, length)}"
                rules.append(f"{expr} @{name} goto {layout.target}")
        return rules

    def _toward_rules(self, version: int) -> list[str]:
        """New packets *to* a held ``block`` or ``smtp`` key (tracked mode only).

        The agent cuts a new hold's open flows by deleting their conntrack
        entries (edgectl.agent.flow_cut).  The held side's next packet is
        then new and meets the hold rules; but if the other side's packet
        comes first (a download, a server's reply), conntrack starts a new
        entry from it, and the held side's packets would be its established
        replies.  These rules drop that first packet.  Only packets that are
        not established get here, so established traffic pays nothing; the
        mail rule looks its set up only for packets from a mail port.
        """
        sets = self.keys.exact_sets()
        block = layout_of(QuarantineMode.BLOCK).target
        smtp = layout_of(QuarantineMode.SMTP).target
        mail = _ports(self.settings.mail_ports)
        rules = []
        for (key_version, length, held), (_, _, mailer) in zip(
            sets[QuarantineMode.BLOCK], sets[QuarantineMode.SMTP], strict=True
        ):
            if key_version != version:
                continue
            to = "ip daddr" if version == 4 else f"ip6 daddr & {mask_text(6, length)}"
            rules.append(f"{to} @{held} goto {block}")
            # The smtp chain judges packets *to* a mail port; these come from one.
            rules.append(f"tcp sport {mail} {to} @{mailer} counter name {smtp} drop")
        return rules

    def _gate_rules(self) -> list[str]:
        """The base chain: IPv6 goes to ``gate_6``, IPv4 is checked here.

        Every hold rule names one family, so a packet of the other family
        would fail each on its protocol check; one dispatch rule replaces
        those walks (a new IPv4 connection meets no IPv6 rule).
        """
        dispatch = f"meta nfproto ipv6 goto {GATE_6}"
        if self.settings.track_non_mail:
            # Established flows leave first: one conntrack check a packet.
            return ["ct state established,related accept", dispatch, *self._family_gate(4)]
        return [dispatch, *self._family_gate(4)]

    def _family_gate(self, version: int) -> list[str]:
        """What a packet of one IP version meets after the base chain's first rules."""
        # An interval lookup costs ~0.4 us a packet even on an empty map, so
        # the prefix-quarantine rule exists only while such quarantines do.
        ranges = (
            [f"{_family_keyword(version)} saddr vmap @q_ranges_{version}"]
            if version in self.range_families
            else []
        )
        mail = f"tcp dport {_ports(self.settings.mail_ports)} jump mail"
        if self.settings.track_non_mail:
            return [
                *self._held_rules("gate", version=version),
                *ranges,
                *self._toward_rules(version),
                mail,
            ]
        # Untracked, a TCP packet that is not an opening SYN leaves early,
        # on its flags alone: as in the tracked mode, quarantines and limits
        # act on new connections, and a connection costs one full check.
        # Other protocols are checked packet by packet.  Mail SYNs then feed
        # the ct count caps where there are any (mail is tracked for them).
        # A mode checked on every packet ("block": open flows, bare ACK or
        # RST floods too - tracked, those are "new" or "invalid" and checked
        # as well) comes before that exit: one lookup a packet, in its set.
        not_opening = "tcp flags & (syn | ack) != syn accept"
        if self.conntrack:
            mail = f"tcp dport {_ports(self.settings.mail_ports)} ct state new jump mail"
        return [
            *self._held_rules("gate", every_packet=True, version=version),
            not_opening,
            *self._held_rules("gate", every_packet=False, version=version),
            *ranges,
            mail,
        ]

    def _steer_chain(self) -> None:
        """DNAT of walled-garden subscribers' plain HTTP to the notice portal.

        Walled-garden keys are steered: exact ones by their hash sets, prefix
        holds by ``steer_ranges_<v>`` (their ``q_ranges_<v>`` verdicts jump
        to filter chains, which a nat hook cannot run); only tcp/80, and
        only new connections (a nat chain sees a flow's first packet alone).
        A subscriber in a walled prefix who is also held ``block`` is
        steered and then dropped by the forward chain, as without steering.
        The portal and the allowlisted update services are reached as
        themselves.  No reset anywhere on this path:
        RFC 6108 asks for none, and the subscriber's browser just gets the
        notice as the page it asked for.  HTTPS is left to the filter side,
        which refuses it: a redirected TLS connection could only show a
        certificate error.
        """
        settings = self.settings
        if not settings.steering:
            return
        walled = self.keys.exact_sets()[QuarantineMode.WALLED_GARDEN]
        port = settings.steer_http_port
        rules: list[str] = []
        for version, address in ((4, settings.steer_http_4), (6, settings.steer_http_6)):
            if address is None:
                continue
            family = _family_keyword(version)
            rules.append(f"{family} daddr @portal_{version} return")
            if self._allowed(version):
                rules.append(
                    f"meta l4proto tcp {family} daddr . th dport @garden_allow_{version} return"
                )
            target = f"{address.address}:{port}" if version == 4 else f"[{address.address}]:{port}"
            for key_version, length, name in walled:
                if key_version != version:
                    continue
                expr = "ip saddr" if version == 4 else f"ip6 saddr & {mask_text(6, length)}"
                rules.append(f"tcp dport 80 {expr} @{name} dnat {family} to {target}")
            ranges = steer_ranges_set(version)
            rules.append(f"tcp dport 80 {family} saddr @{ranges} dnat {family} to {target}")
        self.chain("steer_http", rules, "prerouting", priority="dstnat", chain_type="nat")

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


def _pool_chain(pool: Pool, version: int) -> str:
    return f"pool_{pool.name}_{version}"


def _destination_cap(profile: RateLimitProfile) -> bool:
    """Whether the per-destination cap needs a ct count of its own.

    Each ct count costs a set lookup, an allocation and a list insert on
    every new mail connection.  A subscriber's connections to one
    destination are some of its connections, so with ``per_destination``
    >= ``concurrent`` the pair count can only pass its cap when the
    subscriber's count has passed the (lower) concurrency cap as well: the
    concurrency rule refuses the same connections, with the same deferral,
    and the pair count would never decide anything.  In shadow mode both
    stay: there the counters are the product.
    """
    if profile.per_destination is None:
        return False
    if profile.shadow or profile.concurrent is None:
        return True
    return profile.per_destination < profile.concurrent


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


def _steered(settings: GatewaySettings) -> tuple[int, ...]:
    """The IP versions whose walled-garden HTTP goes to the portal."""
    return tuple(
        version
        for version, address in ((4, settings.steer_http_4), (6, settings.steer_http_6))
        if address is not None
    )


def _steer_elements(
    quarantines: Mapping[Prefix, Quarantine], keys: KeyLayout, now: datetime
) -> dict[int, list[str]]:
    """``steer_ranges_<v>`` elements: walled-garden prefix holds, expired ones left out."""
    found: dict[int, list[str]] = {}
    for key, held in sorted(_ranges_only(quarantines, keys), key=lambda item: item[0]):
        if held.mode is not QuarantineMode.WALLED_GARDEN:
            continue
        seconds = seconds_left(held.expires, now)
        if seconds == 0:
            continue
        timeout = "" if seconds is None else f" timeout {seconds}s"
        found.setdefault(key.version, []).append(f"{key}{timeout}")
    return found


def _ranges_only(entries: Mapping[Prefix, V], keys: KeyLayout) -> Iterable[tuple[Prefix, V]]:
    """The entries whose keys are not exact; none to look for if the shapes say so."""
    if not keys.range_families(entries):  # a KeyMap knows; a dict costs one set of shapes
        return ()
    return ((key, entry) for key, entry in entries.items() if not keys.is_exact(key))


def render_keys(state: DesiredState, now: datetime) -> Transaction:
    """The exact keys as ``add element`` commands, for a table rendered with ``keys=False``.

    Restoring a flushed or missing table in two transactions puts the
    structure (every pool, OP25B and limit rule) in force in a fraction of a
    second; the million keys follow in the second one.
    """
    keys = KeyLayout(state.delegated_lengths())
    exact: dict[str, list[str]] = {}
    ranges: dict[str, list[tuple[Prefix, str]]] = {}
    for kind, sets in keys.exact_sets().items():
        for version, _, name in sets:
            exact[name] = []
            ranges.setdefault(ranges_set(kind, version), [])
    keys.fill(state.quarantines.items(), None, now, exact, ranges)
    keys.fill(state.exemptions.items(), EXEMPT, now, exact, ranges)
    transaction = Transaction(summary=f"keys of revision {state.revision}")
    for name, elements in exact.items():
        transaction.elements("add", name, elements)
    return transaction


def render_full(
    state: DesiredState, now: datetime, counters: Counters | None = None, *, keys: bool = True
) -> Rendered:
    """The whole table, replacing whatever is there in one transaction.

    ``add table`` then ``delete table`` makes the delete safe when the table
    does not exist yet; named counters are carried over by value (``counters``:
    what the kernel has, else the agent's last reading) so that a resync does
    not reset what Prometheus has been scraping.
    """
    builder = _Builder(state, now, counters or {}, keys)
    builder.build()
    body = "\n\n".join(builder.blocks)
    # No revision in the comment: deltas do not rewrite it, so it would go
    # stale; the applied revision is in the state file and the reports.
    comment = f'\tcomment "managed by edgectl: gateway {state.gateway}"'
    transaction = Transaction(summary=f"full sync to revision {state.revision}")
    transaction.add(f"add table {SPEC}")
    transaction.add(f"delete table {SPEC}")
    transaction.add(f"table {SPEC} {{\n{comment}\n\n{body}\n}}")
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
    keys = layout_for(old)
    steered = _steered(old.settings)
    ensure: dict[str, list[str]] = {}
    final: dict[str, list[tuple[str, int | None]]] = {}
    ranges_touched: set[str] = set()

    def touch(key: Prefix, kind: Kind) -> None:
        name, text, exact = keys.place(key, kind, None)
        if exact:
            ensure.setdefault(name, []).append(text)
            return
        ranges_touched.add(name)
        if kind == QuarantineMode.WALLED_GARDEN and key.version in steered:
            ranges_touched.add(steer_ranges_set(key.version))

    def put(key: Prefix, kind: Kind, seconds: int | None) -> None:
        name, text, exact = keys.place(key, kind, None)
        if exact and seconds != 0:
            final.setdefault(name, []).append((text, seconds))

    for q_key in delta.quarantines.removals:
        held = old.quarantines.get(q_key)
        if held is not None:
            touch(q_key, held.mode)
    for quarantine in delta.quarantines.upserts:
        previous = old.quarantines.get(quarantine.key)
        if previous is not None:
            touch(previous.key, previous.mode)
        touch(quarantine.key, quarantine.mode)
        put(quarantine.key, quarantine.mode, seconds_left(quarantine.expires, now))
    for e_key in delta.exemptions.removals:
        touch(e_key, EXEMPT)
    for exemption in delta.exemptions.upserts:
        touch(exemption.key, EXEMPT)
        put(exemption.key, EXEMPT, seconds_left(exemption.expires, now))

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
        _rewrite_ranges(transaction, ranges_touched, patch(old, delta), keys, now)
    return transaction


def _rewrite_ranges(
    transaction: Transaction,
    names: set[str],
    state: DesiredState,
    keys: KeyLayout,
    now: datetime,
) -> None:
    wanted: dict[str, list[str]] = {name: [] for name in names}
    held: Iterable[tuple[Prefix, Kind, datetime | None]] = [
        *((key, q.mode, q.expires) for key, q in state.quarantines.items()),
        *((key, EXEMPT, e.expires) for key, e in state.exemptions.items()),
    ]
    for key, kind, expires in held:
        if keys.is_exact(key):
            continue
        seconds = seconds_left(expires, now)
        name, text, _ = keys.place(key, kind, seconds)
        if name in wanted and seconds != 0:
            wanted[name].append(text)
    for version, elements in _steer_elements(state.quarantines, keys, now).items():
        if steer_ranges_set(version) in wanted:
            wanted[steer_ranges_set(version)] = elements
    for name in sorted(names):
        kind = "map" if name.startswith("q_") else "set"
        transaction.add(f"flush {kind} {SPEC} {name}")
        transaction.elements("add", name, wanted[name])
