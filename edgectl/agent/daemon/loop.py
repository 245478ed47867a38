"""The reconcile loop: what the agent decides, given a kernel, a controller and a disk.

The decisions live here and only here, against small ports (``KernelPort``,
``ControllerPort``, ``StorePort``, ``OffendersPort``) so unit tests drive
them with fakes:

* start: restore last-known-good from disk and commit it (full sync) before
  the controller is asked anything -- a rebooted gateway enforces from its
  first second; a corrupt or newer-schema file is refused with one log line
  and nothing of it reaches the kernel;
* then: snapshot, then long-polled deltas; each commit is one nft
  transaction (whole or nothing); the cursor moves, and the state is handed
  to the state-file writer, only after the kernel took it;
* a delta that does not start at our revision, or any doubt, asks for a
  snapshot instead of guessing; the cursor is the revision with the
  controller store's epoch, persisted with the state, so a restored
  controller database answers with a snapshot, never a delta;
* fail-static: controller errors never touch the kernel, they only delay
  the next attempt (exponential backoff with jitter);
* drift: a ruleset generation we did not produce means someone committed;
  read our table back (no big-set listing) and re-sync it only if it differs;
* offenders: every state put in force is handed to the offender listener
  (its log group and pools), and each status report carries what it heard.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Protocol

from edgectl.agent.daemon.backoff import Backoff
from edgectl.agent.daemon.config import AgentConfig
from edgectl.agent.daemon.kernel import Commit
from edgectl.agent.daemon.metrics import Metrics, policy_of
from edgectl.agent.daemon.persister import Persister
from edgectl.agent.daemon.protocol import (
    Answer,
    ColumnSnapshot,
    ControllerError,
    Delta,
    Snapshot,
)
from edgectl.agent.nft import NftError
from edgectl.agent.persist import Applied, PersistError, Step
from edgectl.agent.restore_payload import Payload
from edgectl.agent.table import SPEC
from edgectl.model.delta import StateDelta, Structure, diff, patch, persistent
from edgectl.model.errors import ModelError
from edgectl.model.policy import DesiredState
from edgectl.model.serial import StateColumns

log = logging.getLogger("edgectl.agent")

# How much drift detail goes into a log line or a status report.
_DRIFT_LINES = 5
# During an outage, repeat the same controller error at most this often.
_ERROR_LOG_EVERY = 60.0
# A delta with at least this many changes is announced before it is
# committed (it takes long enough for an operator to want to know).
_LARGE_DELTA = 1000


class KernelPort(Protocol):
    @property
    def lock(self) -> AbstractContextManager[Any]: ...

    expected: int | None
    suspect: bool

    def generation(self) -> int: ...
    def full_sync(self, state: DesiredState) -> Commit: ...
    def apply_delta(self, old: DesiredState, delta: StateDelta) -> Commit: ...
    def restore_payload(self, payload: Payload) -> Commit: ...
    def sync_columns(self, columns: StateColumns) -> Commit | None: ...
    def cut_held(self, state: DesiredState) -> None: ...
    def drift(self, applied: Applied) -> list[str]: ...
    def counters(self) -> dict[str, tuple[int, int]]: ...


class ControllerPort(Protocol):
    def desired(self, since: int | None, wait: float, epoch: str | None) -> Answer: ...
    def report(
        self, applied_revision: int, detail: dict[str, Any], offenders: dict[str, Any] | None
    ) -> bool: ...


class OffendersPort(Protocol):
    def follow(self, state: DesiredState) -> None: ...
    def report(self) -> dict[str, Any]: ...
    def run_forever(self, stop: threading.Event) -> None: ...


class StorePort(Protocol):
    def record(self, steps: Sequence[Step], newest: DesiredState) -> None: ...
    def checkpoint(
        self, state: DesiredState, generation: int | None, epoch: str | None
    ) -> bool: ...
    def load(self) -> Applied | None: ...
    def load_payload(self) -> Payload | None: ...


@dataclass(frozen=True, slots=True)
class LoopSettings:
    """The loop's share of the agent config: same names, and no defaults of its own
    (``of`` copies a config's values, ``defaults`` the config's declared ones)."""

    gateway: str
    poll_wait: float
    backoff_min: float
    backoff_max: float
    drift_interval: float
    report_interval: float
    # At most one report per this many seconds while revisions stream in: one
    # per delta from every gateway would make reports the controller's main load.
    report_min_gap: float

    @classmethod
    def of(cls, config: AgentConfig) -> LoopSettings:
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})

    @classmethod
    def defaults(cls, gateway: str, **changes: float) -> LoopSettings:
        """The config's defaults for ``gateway`` (tests and benchmarks drive a loop
        without a config file)."""
        declared = {f.name: f.default for f in fields(AgentConfig)}
        values = {f.name: declared[f.name] for f in fields(cls) if f.name != "gateway"}
        return cls(gateway=gateway, **{**values, **changes})  # type: ignore[arg-type]


@dataclass
class LastApply:
    kind: str
    revision: int
    seconds: float
    at: str


@dataclass
class _Status:
    """What the next status report says (guarded by the agent's status lock)."""

    last_apply: LastApply | None = None
    last_drift: list[str] = field(default_factory=list)
    last_error: str | None = None


class Agent:
    def __init__(
        self,
        settings: LoopSettings,
        kernel: KernelPort,
        controller: ControllerPort,
        store: StorePort,
        metrics: Metrics,
        *,
        stop: threading.Event | None = None,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
        persist_in_background: bool = False,
        offenders: OffendersPort | None = None,
    ) -> None:
        self.settings = settings
        self.kernel = kernel
        self.controller = controller
        self.store = store
        self.metrics = metrics
        self.stop = stop or threading.Event()
        self.backoff = backoff or Backoff(settings.backoff_min, settings.backoff_max)
        self._clock = clock
        self.persister = Persister(store, metrics, inline=not persist_in_background)
        self.offenders = offenders
        self._offenders_refused = False  # the controller took reports only without them
        # What the kernel holds (by our last commit); read and written under kernel.lock.
        self.applied: Applied | None = None
        # The revision to ask deltas from; None asks for a snapshot.
        self.cursor: int | None = None
        # The controller store's epoch the cursor belongs to (None: unknown).
        self.epoch: str | None = None
        self._status = _Status()
        self._status_lock = threading.Lock()
        self._report_wanted = threading.Event()
        self._last_error_text: str | None = None
        self._last_error_log = float("-inf")

    # -- start -----------------------------------------------------------------

    def restore(self) -> bool:
        """Commit the persisted last-known-good state; True if it is now in force.

        From the snapshot's restore payload when it matches the state on
        disk (the kernel first, the model after: edgectl.agent.restore_payload),
        else loaded, rendered and committed.  Either way the agent ends in
        the same place: the state adopted, the cursor at its revision.
        """
        payload = self.store.load_payload()
        if payload is not None and payload.structure.gateway == self.settings.gateway:
            restored = self._restore_payload(payload)
            if restored is not None:
                return restored
        try:
            persisted = self.store.load()
        except PersistError as error:
            log.error("%s; nothing applied from it, waiting for the controller's snapshot", error)
            return False
        if persisted is None:
            log.info("no persisted state yet; waiting for the controller's snapshot")
            return False
        return self._restore_state(persisted)

    def _restore_state(self, persisted: Applied) -> bool:
        state = persisted.state
        if state.gateway != self.settings.gateway:
            log.error(
                "persisted state is for gateway %r, this agent is %r; not applied, "
                "waiting for the controller's snapshot",
                state.gateway,
                self.settings.gateway,
            )
            return False
        with self.kernel.lock:
            _announce_full(state, "restore")
            try:
                commit = self.kernel.full_sync(state)
            except NftError as error:
                log.error("persisted revision %d refused by the kernel: %s", state.revision, error)
                self.metrics.add("apply_failures")
                return False
            # The state is on disk already; only the new generation is news.
            self._adopt(state, commit, "restore", _unchanged(state), persisted.epoch)
        _log_restored(state.revision)
        return True

    def _restore_payload(self, payload: Payload) -> bool | None:
        """The payload committed, then the model built and adopted; None: use the
        ordinary path instead (nothing of the payload is in force)."""
        with self.kernel.lock:
            log.info("applying revision %d (restore, full sync from the payload)", payload.revision)
            try:
                commit = self.kernel.restore_payload(payload)
            except NftError as error:
                log.warning("%s; restoring from the state file instead", error)
                return None
            _log_restored(payload.revision)
            try:
                persisted = self.store.load()
            except PersistError as error:
                # The payload matched this very file, so this is not damage
                # on disk: keep enforcing; the controller's snapshot follows.
                log.error("%s; the restored rules stay until the controller's snapshot", error)
                return True
            if persisted is None or not _same_table(persisted.state, payload.structure):
                log.error("the payload does not match the state file; restoring from the file")
                return None if persisted is None else self._restore_state(persisted)
            self.kernel.cut_held(persisted.state)
            self._adopt(
                persisted.state, commit, "restore", _unchanged(persisted.state), persisted.epoch
            )
        return True

    def stopping(self) -> None:
        """A clean stop (under kernel.lock): everything on disk, and the journal folded
        into a snapshot if it changed anything, so the next start uses the payload."""
        self.persister.flush()
        applied = self.applied
        if applied is not None:
            self.persister.checkpoint(applied.state, applied.generation, applied.epoch)

    # -- sync ------------------------------------------------------------------

    def sync_once(self) -> bool:
        """One request to the controller and whatever it asks of the kernel.

        False on any failure (the caller backs off); the kernel keeps what
        it has whenever this returns False.
        """
        try:
            answer = self.controller.desired(self.cursor, self.settings.poll_wait, self.epoch)
        except ControllerError as error:
            self.metrics.add("controller_errors")
            self.metrics.set_reachable(False)
            self._log_controller_error(str(error))
            return False
        self.metrics.set_reachable(True)
        if self._last_error_text is not None:
            log.info("controller reachable again")
            self._last_error_text = None
        try:
            self.handle(answer)
        except (NftError, ModelError, ValueError, OSError) as error:
            # OSError: a netlink read around the commit failed.  The
            # transaction itself is all-or-nothing either way.
            self.metrics.add("apply_failures")
            self._set_error(f"revision {answer.revision} not applied: {error}")
            log.error("revision %d not applied, kernel unchanged: %s", answer.revision, error)
            return False
        return True

    def handle(self, answer: Answer) -> bool:
        """Apply a controller answer; True if the kernel or the cursor changed."""
        if isinstance(answer, Snapshot):
            return self._snapshot(answer.state, answer.epoch)
        if isinstance(answer, ColumnSnapshot):
            return self._column_snapshot(answer.columns, answer.epoch)
        assert isinstance(answer, Delta)
        return self._delta(answer.delta, answer.epoch)

    def _snapshot(self, state: DesiredState, epoch: str | None = None) -> bool:
        if state.gateway != self.settings.gateway:
            raise ValueError(f"snapshot is for gateway {state.gateway!r}")
        with self.kernel.lock:
            applied = self.applied
            if applied is not None and applied.state == state:
                if epoch != self.epoch:
                    # Nothing to commit, but the cursor's epoch is news to
                    # the disk: after a restart it must not be the old one.
                    self.persister.submit(state, applied.generation, None, epoch)
                    self.epoch = epoch
                self.cursor = state.revision
                return False
            if applied is not None and applied.state.revision > state.revision:
                # The controller went back in time (restored from a backup):
                # its word is the truth, whatever our revision says.
                log.warning(
                    "controller is at revision %d, behind our %d (database restored?); "
                    "resyncing to it",
                    state.revision,
                    applied.state.revision,
                )
            elif applied is not None and epoch != self.epoch and self.epoch is not None:
                log.warning(
                    "controller store epoch changed (%s -> %s: restored or replaced "
                    "database); resyncing to its revision %d",
                    self.epoch,
                    epoch,
                    state.revision,
                )
            commit, delta = self._commit_state(applied, state)
            self._adopt(state, commit, "snapshot", delta, epoch)
        return True

    def _column_snapshot(self, columns: StateColumns, epoch: str | None) -> bool:
        """A snapshot still in columns: with nothing applied and no table there (a
        cold start), the kernel written from the key columns and the model built
        after, as a restore from the payload does; else the ordinary snapshot.

        The columns passed every check the model makes (``state_columns``), so
        building the state after the commit cannot refuse what was committed.
        """
        structure = columns.structure
        if structure.gateway != self.settings.gateway:
            raise ValueError(f"snapshot is for gateway {structure.gateway!r}")
        with self.kernel.lock:
            commit = None
            if self.applied is None:
                log.info(
                    "applying revision %d (snapshot, full sync from its columns: "
                    "%d quarantines, %d exemptions)",
                    structure.revision,
                    len(columns.quarantines),
                    len(columns.exemptions),
                )
                commit = self.kernel.sync_columns(columns)
            state = columns.state()
            if commit is None:
                return self._snapshot(state, epoch)
            self.kernel.cut_held(state)
            self._adopt(state, commit, "snapshot", None, epoch)
        return True

    def _commit_state(
        self, applied: Applied | None, state: DesiredState
    ) -> tuple[Commit, StateDelta | None]:
        """Move the kernel from ``applied`` to ``state``: elements only when that is safe.

        Also returns the delta from ``applied`` when there is one, so the
        persister can journal it instead of writing the whole state.
        """
        kernel = self.kernel
        if (
            applied is not None
            and not kernel.suspect
            and kernel.expected is not None
            and kernel.generation() == kernel.expected
        ):
            # Nobody committed since we did, so the kernel holds exactly
            # ``applied``: a snapshot after a reconnect costs what changed,
            # not a reload of a million keys.
            delta = diff(applied.state, state)
            return self._elements(applied.state, delta, lambda: state), delta
        _announce_full(state, "snapshot")
        return kernel.full_sync(state), None

    def _elements(
        self, old: DesiredState, delta: StateDelta, new: Callable[[], DesiredState]
    ) -> Commit:
        """``delta`` committed from ``old``; the whole of ``new()`` if that fails in any way.

        Whether the delta goes in as elements or needs a full sync is the
        kernel's call (``keys.needs_full_sync``, the one place that decides).
        """
        _announce_delta(delta)
        try:
            return self.kernel.apply_delta(old, delta)
        except Exception as error:
            # Whatever went wrong on the element path (a set someone deleted,
            # a batch the kernel refused, a bug), the whole state replaces the
            # table in one transaction either way.
            log.warning(
                "delta r%d->r%d not applied (%s: %s); full sync instead",
                delta.from_revision,
                delta.to_revision,
                type(error).__name__,
                error,
            )
            state = new()
            _announce_full(state, "after a failed delta")
            return self.kernel.full_sync(state)

    def _delta(self, delta: StateDelta, epoch: str | None = None) -> bool:
        with self.kernel.lock:
            applied = self.applied
            if (
                applied is None
                or delta.gateway != self.settings.gateway
                or delta.from_revision != applied.state.revision
                # A delta of another epoch continues a history we did not see.
                or (self.epoch is not None and epoch != self.epoch)
            ):
                have = None if applied is None else applied.state.revision
                log.warning(
                    "delta r%d->r%d does not follow applied revision %s; asking for a snapshot",
                    delta.from_revision,
                    delta.to_revision,
                    have,
                )
                self.cursor = None
                return False
            if delta.empty and delta.to_revision == applied.state.revision:
                return False  # the long-poll ran out: nothing new
            # The kernel first, from the delta alone; the new state after:
            # a persistent map, so it costs the keys the delta touches.
            commit = self._elements(applied.state, delta, lambda: patch(applied.state, delta))
            self._adopt(patch(applied.state, delta), commit, "delta", delta, epoch)
        return True

    def _adopt(
        self,
        state: DesiredState,
        commit: Commit,
        why: str,
        delta: StateDelta | None,
        epoch: str | None,
    ) -> None:
        """The kernel took ``state`` (of store ``epoch``): hand it to the persister,
        move the cursor.

        ``delta`` led from the previously adopted state to this one, if known.
        Called under kernel.lock, only after a commit succeeded.
        """
        # Persistent key maps (once per snapshot, after its commit): each
        # later delta then costs what it touches, not a copy of every key.
        state = persistent(state)
        result = commit.result
        if result.kind != "none":
            self.metrics.observe_apply(result.kind, result.seconds)
        if result.kind == "full":
            # A million-key state is millions of long-lived, acyclic objects;
            # a full cyclic-GC pass over them costs ~0.5 s, paid at random in
            # the middle of some later delta.  Frozen, the collector skips
            # them; reference counting still frees them when replaced.
            gc.freeze()
        self.persister.submit(state, commit.generation, delta, epoch)
        if self.offenders is not None:
            self.offenders.follow(state)
        self.applied = Applied(state, commit.generation, epoch)
        self.cursor = state.revision
        self.epoch = epoch
        self.metrics.synced(state.revision)
        log.info(
            "revision %d in force (%s, %s, %.1f ms)",
            state.revision,
            why,
            result.kind,
            result.seconds * 1000,
        )
        with self._status_lock:
            self._status.last_apply = LastApply(
                result.kind, state.revision, result.seconds, _now_text()
            )
            self._status.last_error = None
        self._report_wanted.set()

    def _log_controller_error(self, text: str) -> None:
        now = self._clock()
        if text != self._last_error_text or now - self._last_error_log >= _ERROR_LOG_EVERY:
            log.warning("controller: %s; rules stay as applied, retrying", text)
            self._last_error_log = now
        self._last_error_text = text

    def _set_error(self, text: str) -> None:
        with self._status_lock:
            self._status.last_error = text
        self._report_wanted.set()

    # -- drift -------------------------------------------------------------------

    def check_drift(self) -> bool:
        """Repair our table if a foreign commit changed it; True if it was repaired."""
        kernel = self.kernel
        with kernel.lock:
            applied = self.applied
            if applied is None:
                return False
            current = kernel.generation()
            if current == kernel.expected and not kernel.suspect:
                return False
            kernel.suspect = False
            self.metrics.add("drift_checks")
            drift = kernel.drift(applied)
            if not drift:
                # Another tool's commit (or an element added by hand, which
                # cannot be seen without listing): our table is as we left it.
                kernel.expected = current
                return False
            shown = "; ".join(drift[:_DRIFT_LINES])
            more = f" (+{len(drift) - _DRIFT_LINES} more)" if len(drift) > _DRIFT_LINES else ""
            log.warning("drift in table %s: %s%s; repairing", SPEC, shown, more)
            try:
                commit = kernel.full_sync(applied.state)
            except NftError as error:
                kernel.suspect = True  # look again next round
                self.metrics.add("apply_failures")
                log.error("drift repair refused by the kernel: %s", error)
                return False
            self.metrics.add("drift_repairs")
            with self._status_lock:
                self._status.last_drift = drift[:_DRIFT_LINES]
            self._adopt(
                applied.state, commit, "drift repair", _unchanged(applied.state), self.epoch
            )
        return True

    # -- status ------------------------------------------------------------------

    def status_detail(self) -> dict[str, Any]:
        counters: dict[str, Any] = {}
        try:
            for name, (packets, octets) in sorted(self.kernel.counters().items()):
                counters[name] = {"policy": policy_of(name), "packets": packets, "bytes": octets}
        except (OSError, NftError) as error:
            counters = {"error": str(error)}
        with self._status_lock:
            status = self._status
            last = status.last_apply
            detail: dict[str, Any] = {
                "reported_at": _now_text(),
                "last_apply": None
                if last is None
                else {
                    "kind": last.kind,
                    "revision": last.revision,
                    "seconds": round(last.seconds, 6),
                    "at": last.at,
                },
                "counters": counters,
                "drift_repairs": self.metrics.drift_repairs,
                "last_drift": list(status.last_drift),
                "error": status.last_error,
            }
        since = self.metrics.seconds_since_sync()
        detail["seconds_since_sync"] = None if since is None else round(since, 3)
        return detail

    def report_once(self) -> bool:
        with self.kernel.lock:
            applied = self.applied
        if applied is None:
            return False
        try:
            took = self.controller.report(
                applied.state.revision, self.status_detail(), self.offenders_report()
            )
        except ControllerError as error:
            log.debug("status report failed: %s", error)
            return False
        refused = not took
        if refused != self._offenders_refused:  # log the change, not every report
            self._offenders_refused = refused
            if not refused:
                log.info("the controller takes the offenders section again")
            else:
                log.warning(
                    "the controller refused the offenders section of the status report "
                    "(HTTP 422; see the client's log line for why); reporting without it"
                )
        return True

    def offenders_report(self) -> dict[str, Any] | None:
        """The report's offenders section; None (left out) without a listener."""
        return None if self.offenders is None else self.offenders.report()

    # -- threads -------------------------------------------------------------------

    def sync_forever(self) -> None:
        while not self.stop.is_set():
            try:
                ok = self.sync_once()
            except Exception:
                # A bug must not leave a process that looks alive but no
                # longer syncs: log it whole and keep trying, backing off.
                log.exception("unexpected error in the sync loop")
                ok = False
            if ok:
                self.backoff.reset()
            else:
                self.stop.wait(self.backoff.next_delay())

    def drift_forever(self) -> None:
        while not self.stop.wait(self.settings.drift_interval):
            try:
                self.check_drift()
            except (OSError, NftError, ModelError) as error:
                # A netlink hiccup must not end drift protection for good.
                log.error("drift check failed: %s", error)

    def report_forever(self) -> None:
        last = float("-inf")
        while not self.stop.is_set():
            self._report_wanted.wait(self.settings.report_interval)
            if self.stop.is_set():
                return
            gap = self.settings.report_min_gap - (self._clock() - last)
            if gap > 0 and self.stop.wait(gap):
                return
            self._report_wanted.clear()
            self.report_once()
            last = self._clock()

    def threads(self) -> Iterator[threading.Thread]:
        targets: tuple[tuple[str, Callable[[], None]], ...] = (
            ("sync", self.sync_forever),
            ("drift", self.drift_forever),
            ("report", self.report_forever),
            ("persist", lambda: self.persister.run_forever(self.stop)),
        )
        if self.offenders is not None:
            offenders = self.offenders
            targets += (("offenders", lambda: offenders.run_forever(self.stop)),)
        for name, target in targets:
            yield threading.Thread(target=target, name=f"agent-{name}", daemon=True)


def _announce_full(state: DesiredState, why: str) -> None:
    log.info(
        "applying revision %d (%s, full sync: %d quarantines, %d exemptions)",
        state.revision,
        why,
        len(state.quarantines),
        len(state.exemptions),
    )


def _announce_delta(delta: StateDelta) -> None:
    changes = sum(
        len(part.upserts) + len(part.removals) for part in (delta.quarantines, delta.exemptions)
    )
    if changes >= _LARGE_DELTA:
        log.info(
            "applying delta r%d->r%d (%d changes)", delta.from_revision, delta.to_revision, changes
        )


def _log_restored(revision: int) -> None:
    # The line operators (and bench/agent_steady.py) wait for: rules in force.
    log.info("restored revision %d from disk before contacting the controller", revision)


def _same_table(state: DesiredState, structure: DesiredState) -> bool:
    """``structure`` (a payload's) is ``state``'s revision, gateway and structure."""
    return (
        state.gateway == structure.gateway
        and state.revision == structure.revision
        and Structure.of(state) == Structure.of(structure)
    )


def _unchanged(state: DesiredState) -> StateDelta:
    """The state stays what it is; a commit still gave it a new generation."""
    return StateDelta(state.gateway, state.revision, state.revision)


def _now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
