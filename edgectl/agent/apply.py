"""Commit a DesiredState to the kernel: full sync, or an element delta.

Full sync (start-up, repair, structural change) replaces the table in one
transaction.  A delta is element adds/deletes in one transaction and costs
what it touches, not the size of the sets.  Either way the kernel applies
all of it or none of it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from edgectl.agent import kernel_readback as kr
from edgectl.agent import kernel_write, table
from edgectl.agent.flow_cut import BackgroundCuts, FlowCutter, held_keys
from edgectl.agent.keys import is_exact, needs_full_sync
from edgectl.agent.netlink.nfsocket import NetlinkError, NfNetlink
from edgectl.agent.netns import inside
from edgectl.agent.nft import Nft, NftError, kind_of_errno, release_heap
from edgectl.agent.render import Counters, render_delta, render_full
from edgectl.agent.transaction import Transaction
from edgectl.model.delta import StateDelta, patch
from edgectl.model.policy import DesiredState
from edgectl.model.serial import StateColumns


@dataclass(frozen=True)
class ApplyResult:
    kind: str  # "full", "delta" or "none"
    revision: int
    seconds: float
    # What went to the kernel: nft script, and element batches sent raw.
    script_bytes: int
    # Transactions committed (each moves the ruleset generation by one): 2
    # for a table restored structure first, then keys.
    commits: int = 1


class Dataplane:
    """The kernel side of one gateway: our table in one namespace, the one façade.

    Everything the agent and the CLI do to the kernel goes through here, on
    two handles opened together in one setns round trip and kept: one
    libnftables context and one nfnetlink socket (a process needs no more).
    Writes go through libnftables, or as element batches over the socket;
    reads go through the socket, because nft 1.0.6 loads every set element
    before it lists anything, counters included (17 s with a million keys,
    against 0.15 ms for the dump).  Neither handle is thread-safe: callers
    that share a Dataplane between threads hold a lock (daemon.kernel).
    """

    def __init__(self, netns: str | None = None, cuts: BackgroundCuts | None = None) -> None:
        """``cuts``: where held keys' open flows are cut (None: inline, before a commit returns)."""
        self.netns = netns
        self.cuts = cuts
        # Each handle stays bound to the namespace it was opened in.
        with inside(netns):
            self.nft = Nft()
            try:
                self.sock = NfNetlink()
            except BaseException:
                self.nft.close()
                raise

    def close(self) -> None:
        self.sock.close()
        self.nft.close()

    def __enter__(self) -> Dataplane:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _cutter(self) -> FlowCutter:
        return FlowCutter(self.sock, None if self.cuts is None else self.cuts.submit)

    def table_exists(self) -> bool:
        return kr.table_exists(self.sock, table.NFPROTO, table.NAME)

    def generation(self) -> int:
        return kr.generation(self.sock)

    def read_table(self) -> kr.TableLayout | None:
        """Our table's chains, named sets and counters at one generation; None if absent."""
        return kr.read_table(self.sock, table.NFPROTO, table.NAME)

    def counters(self) -> dict[str, tuple[int, int]]:
        """Named counters of our table: packets and bytes, at one generation."""
        layout = self.read_table()
        return {} if layout is None else dict(layout.counters)

    def counter_objects(self) -> dict[str, tuple[int, int]]:
        """Named counters from one GETOBJ dump (cheaper than ``counters``); {} with no table."""
        try:
            return kr.read_counters(self.sock, table.NFPROTO, table.NAME)
        except NetlinkError:
            return {}  # no table (yet): no counters

    def missing_elements(self, set_name: str, keys: Iterable[bytes]) -> list[bytes]:
        """The keys that are not in one of our hash sets (one lookup a key, no listing)."""
        return kr.missing_elements(self.sock, table.NFPROTO, table.NAME, set_name, keys)

    def list_set(self, kind: str, name: str) -> list[dict[str, Any]]:
        """A small set or map of ours, listed by nft (JSON); never for a big hash set."""
        return self.nft.run_json(f"list {kind} {table.SPEC} {name}")

    def full_sync(
        self, state: DesiredState, now: datetime | None = None, carried: Counters | None = None
    ) -> ApplyResult:
        """Replace the table with ``state``; named counters keep their values.

        ``carried`` is the caller's last reading: it fills in the counters the
        kernel no longer has (a flushed ruleset), so a repair does not reset
        what Prometheus has been scraping.  What the kernel still has wins.
        """
        with self._cutter().after_full(state, now):
            return self._full_sync(state, now or datetime.now(UTC), carried)

    def _full_sync(
        self, state: DesiredState, now: datetime, carried: Counters | None
    ) -> ApplyResult:
        """With no table there (start-up on a fresh boot, a flushed ruleset),
        nothing is lost by two transactions: the structure first - every
        chain, pool, OP25B and limit rule in force within a fraction of a
        second - then the keys.  Replacing an existing table stays one
        transaction, so a structural change never shows a table without its
        keys.
        """
        start = time.perf_counter()
        try:
            counters: Counters = {**(carried or {}), **self.counters()}
            if not self.table_exists():
                return self._onto_empty(
                    state, lambda: kernel_write.pack_keys(state, now), now, counters, start
                )
            transaction = render_full(state, now, counters).transaction
            return self._commit(transaction, "full", state.revision, start)
        finally:
            # libnftables parses a 20-40 MB script into ~10x that of heap;
            # glibc keeps the freed pages unless asked to give them back.
            release_heap()

    def sync_columns(
        self,
        columns: StateColumns,
        now: datetime | None = None,
        carried: Counters | None = None,
        *,
        cut: bool = False,
    ) -> ApplyResult | None:
        """``full_sync(columns.state())`` onto no table, written from the columns.

        A cold start's first snapshot, or ``edgectl apply -f`` onto a fresh
        gateway: the structure (with the few prefix keys) rendered, the exact
        keys packed from the key columns, so the kernel enforces before (or
        without) a million entry objects being built.  None if our table is
        there: replacing a table is one transaction, rendered from the model.
        ``cut``: the held keys' open flows cut after the commit, as
        ``full_sync`` does (the state is built only if there are open flows);
        the agent does that itself once its model is built (daemon.kernel).
        """
        now = now or datetime.now(UTC)
        start = time.perf_counter()
        try:
            if self.table_exists():
                return None
            lengths = columns.structure.delegated_lengths()
            structure = columns.subset(
                lambda version, length: not is_exact(version, length, lengths)
            )
            result = self._onto_empty(
                structure,
                lambda: kernel_write.pack_columns(columns, now),
                now,
                {**(carried or {})},
                start,
            )
        finally:
            release_heap()
        if cut:
            self._cutter().cut(lambda: held_keys(columns.state(), now))
        return result

    def _onto_empty(
        self,
        state: DesiredState,
        pack: Callable[[], Mapping[str, Sequence[bytes]]],
        now: datetime,
        counters: Counters,
        start: float,
    ) -> ApplyResult:
        """``state``'s structure committed, then the keys ``pack`` gives as one element batch."""
        structure = render_full(state, now, counters, keys=False).transaction
        first = self._commit(structure, "full", state.revision, start)
        # The keys as one element batch, packed from the state: no
        # script to write for nft to parse back (kernel_write).
        keys = pack()
        if not keys:
            return first
        try:
            sent = kernel_write.commit_packed(self.sock, keys)
        except (NetlinkError, TimeoutError) as error:
            # Not "kernel unchanged": the structure is in force.
            raise NftError(
                f"revision {state.revision}: structure in force, its keys refused ({error})",
                kind_of_errno(error.errno),
            ) from error
        size = first.script_bytes + sent
        seconds = time.perf_counter() - start
        return ApplyResult("full", state.revision, seconds, size, commits=2)

    def apply_delta(
        self, old: DesiredState, delta: StateDelta, now: datetime | None = None
    ) -> ApplyResult:
        with self._cutter().after_delta(old, delta, now):
            return self._apply_delta(old, delta, now)

    def _apply_delta(
        self, old: DesiredState, delta: StateDelta, now: datetime | None
    ) -> ApplyResult:
        start = time.perf_counter()
        if delta.empty:
            return ApplyResult("none", delta.to_revision, 0.0, 0)
        if needs_full_sync(old, delta):
            return self.full_sync(patch(old, delta), now)
        transaction = render_delta(old, delta, now or datetime.now(UTC))
        if transaction.only_key_ops:
            try:
                kernel_write.commit_elements(self.sock, transaction.key_ops)
            except (NetlinkError, TimeoutError) as error:
                raise NftError(
                    f"{transaction.summary} refused, kernel unchanged: {error}",
                    kind_of_errno(error.errno),
                ) from error
            seconds = time.perf_counter() - start
            return ApplyResult("delta", delta.to_revision, seconds, len(str(transaction)))
        return self._commit(transaction, "delta", delta.to_revision, start)

    def check(self, transaction: Transaction) -> None:
        """Let nft and the kernel validate a transaction without committing it."""
        self.nft.run(str(transaction), dry_run=True)

    def remove(self) -> bool:
        """Delete our table (decommission); True if there was one."""
        if not self.table_exists():
            return False
        self.nft.run(f"delete table {table.SPEC}\n")
        return True

    def _commit(
        self, transaction: Transaction, kind: str, revision: int, start: float
    ) -> ApplyResult:
        script = str(transaction)
        try:
            self.nft.run(script)
        except NftError as error:
            raise NftError(
                f"{transaction.summary} refused, kernel unchanged: {error.message}", error.kind
            ) from error
        return ApplyResult(kind, revision, time.perf_counter() - start, len(script))
