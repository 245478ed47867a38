"""Last-known-good state on disk: what a rebooted gateway enforces first.

Two files in the state directory:

* ``applied.json``, a snapshot: the whole state, written atomically
  (temporary file, fsync, rename), so a crash mid-write leaves the previous
  snapshot, never half of the new one;
* ``journal.jsonl``, the deltas applied since that snapshot, one JSON line
  each, fsynced before the next is written.  Its first line names the
  snapshot it continues (a random id), so a journal left over from an older
  snapshot is recognised and ignored, never replayed onto the wrong base.

With ``payload=True`` (the agent) each snapshot also gets ``applied.nft``,
its keys rendered for the kernel (edgectl.agent.restore_payload), written
before ``applied.json`` so that a snapshot in place always has its payload
beside it; a restart commits it before it parses the snapshot.

A one-key delta then costs one short line, not a rewrite of a million keys.
When the journal has grown larger than the snapshot, the next write is a
new snapshot (so the cost stays in proportion to what changed).  On load,
a torn last line - a crash in the middle of an append - is ignored: every
line before it is a complete revision (and the next write is a snapshot).
Anything else that does not decode or does not continue the chain refuses
the whole persisted state.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgectl.agent import restore_payload
from edgectl.agent.restore_payload import Payload, PayloadMismatch
from edgectl.model.delta import StateDelta, patch_chain
from edgectl.model.errors import ModelError
from edgectl.model.policy import DesiredState
from edgectl.model.serial import delta_from_data, delta_to_data, state_from_data, state_to_data

FILE_NAME = "applied.json"
JOURNAL_NAME = "journal.jsonl"
PAYLOAD_NAME = "applied.nft"
# A snapshot is written instead of an append once the journal is larger
# than the snapshot (or than this floor, for small states).
_JOURNAL_FLOOR_BYTES = 1 << 20

log = logging.getLogger("edgectl.agent")


class PersistError(RuntimeError):
    pass


@dataclass(frozen=True)
class Applied:
    state: DesiredState
    # The kernel's ruleset generation right after our commit: if it is still
    # the same, nobody has committed anything since, so the kernel holds
    # exactly this state and no read-back is needed.
    generation: int | None
    # The controller store's epoch the state's revision belongs to (None:
    # not known, e.g. written before epochs); the cursor is (epoch, revision).
    epoch: str | None = None


@dataclass(frozen=True)
class Step:
    """One applied revision: the delta that led to it (None: not known), its generation."""

    delta: StateDelta | None
    generation: int | None
    epoch: str | None = None  # the store epoch of the revision it leads to


@dataclass
class _Journal:
    """Where the files stand: appends continue ``revision`` of snapshot ``ident``."""

    ident: str
    revision: int
    snapshot_bytes: int
    journal_bytes: int
    epoch: str | None = None  # the snapshot's; appends keep it (a new epoch is a snapshot)
    # Whether an appended entry changed the state (the snapshot's payload is stale then).
    changed: bool = False


def _changes(delta: StateDelta) -> bool:
    return not delta.empty or delta.from_revision != delta.to_revision


class StateStore:
    """The state directory of one agent (or CLI); one writer at a time (the agent's lock)."""

    def __init__(self, directory: Path, *, payload: bool = False) -> None:
        self.directory = directory
        self.path = directory / FILE_NAME
        self.journal_path = directory / JOURNAL_NAME
        self.payload_path = directory / PAYLOAD_NAME
        # Whether snapshots get a restore payload (the agent's store does;
        # the CLI's does not restore, and a payload it left stale is removed).
        self.payload = payload
        # None until this process saved or loaded: only then is it known
        # which snapshot the journal on disk continues.
        self._journal: _Journal | None = None

    # -- writing -----------------------------------------------------------------

    def save(
        self,
        state: DesiredState,
        generation: int | None,
        epoch: str | None = None,
        *,
        state_json: str | None = None,
    ) -> None:
        """A new snapshot and an empty journal that continues it.

        ``state_json``: ``state`` as a JSON document, ASCII, when the caller
        has it already (a JSON policy file it was decoded from): written as
        it is instead of writing every key out again.
        """
        self._journal = None  # until both files are in place
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._remove_stale_temporaries()
        ident = os.urandom(8).hex()  # secrets.token_hex(8), without importing secrets
        head = json.dumps(
            {"generation": generation, "journal": ident, "epoch": epoch}, separators=(",", ":")
        )
        if state_json is None:
            state_json = json.dumps(state_to_data(state), separators=(",", ":"))
        # The same bytes as dumping the whole document: "state" comes last.
        text = f'{head[:-1]},"state":{state_json}}}'
        if self.payload:
            # The bytes applied.json will hold: _replace adds one newline.
            snapshot = f"{text}\n".encode()
            self._replace(
                self.payload_path, ".payload-", restore_payload.render(state, snapshot, ident)
            )
        else:
            self.payload_path.unlink(missing_ok=True)
        size = self._replace(self.path, ".applied-", text)
        # The snapshot is in place first: a crash before the journal is
        # replaced leaves a journal naming the old snapshot, which load ignores.
        header = json.dumps({"journal": ident, "revision": state.revision})
        self._replace(self.journal_path, ".journal-", header)
        self._journal = _Journal(ident, state.revision, size, len(header) + 1, epoch)

    def record(self, steps: Sequence[Step], newest: DesiredState) -> None:
        """Persist applied revisions up to ``newest``, the state after the last step.

        The steps' deltas are appended while they continue the journal; if
        one does not (no delta, a gap, or the journal has outgrown its
        snapshot), ``newest`` is written as a snapshot instead: it holds
        every step.  Any failure leaves the next write a snapshot.
        """
        if not steps:
            return
        journal = self._journal
        last = steps[-1]
        try:
            # A new store epoch is written as a snapshot: the journal's
            # header names one epoch for every line it holds.
            if journal is None or any(step.epoch != journal.epoch for step in steps):
                self.save(newest, last.generation, last.epoch)
                return
            lines: list[str] = []
            revision, size = journal.revision, journal.journal_bytes
            for step in steps:
                if (
                    step.delta is None
                    or step.delta.from_revision != revision
                    or size > max(journal.snapshot_bytes, _JOURNAL_FLOOR_BYTES)
                ):
                    self.save(newest, last.generation, last.epoch)
                    return
                line = json.dumps(
                    {"generation": step.generation, "delta": delta_to_data(step.delta)},
                    separators=(",", ":"),
                )
                lines.append(line)
                revision = step.delta.to_revision
                size += len(line) + 1
            self._append(lines)
            journal.revision, journal.journal_bytes = newest.revision, size
            journal.changed = journal.changed or any(
                step.delta is not None and _changes(step.delta) for step in steps
            )
        except BaseException:
            # Part of it may be on disk: only a snapshot is a sure base now.
            self._journal = None
            raise

    def checkpoint(self, state: DesiredState, generation: int | None, epoch: str | None) -> bool:
        """A snapshot of ``state`` if the journal changed what the last one holds; True if written.

        For a clean stop: the next start then restores from the snapshot's
        payload instead of replaying the journal (a crash leaves the journal,
        which is replayed as ever).
        """
        journal = self._journal
        if self.payload and (journal is None or journal.changed):
            self.save(state, generation, epoch)
            return True
        return False

    def _append(self, lines: list[str]) -> None:
        with self.journal_path.open("a") as file:
            file.write("".join(f"{line}\n" for line in lines))
            file.flush()
            os.fsync(file.fileno())

    def _replace(self, path: Path, prefix: str, text: str | Iterable[str]) -> int:
        """Write ``text`` (or its parts, as they come) and a newline to ``path``
        atomically and durably; the bytes written."""
        # Here, not at the top: tempfile (with shutil, random, bz2, lzma) is
        # ~3 ms of every ``edgectl apply`` and agent start before its commit.
        import tempfile

        temporary: str | None = None
        try:
            handle, temporary = tempfile.mkstemp(dir=self.directory, prefix=prefix)
            with os.fdopen(handle, "w") as file:
                file.writelines([text] if isinstance(text, str) else text)
                file.write("\n")
                file.flush()
                os.fsync(file.fileno())
                size = file.tell()
            os.replace(temporary, path)
            temporary = None
            # The rename itself survives a power loss only once the
            # directory is on disk too.
            directory = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        finally:
            if temporary is not None:
                Path(temporary).unlink(missing_ok=True)
        return size

    def _remove_stale_temporaries(self) -> None:
        """Temporary files a crash left behind (they are never read)."""
        for prefix in (".applied-", ".journal-", ".payload-"):
            for path in self.directory.glob(f"{prefix}*"):
                path.unlink(missing_ok=True)

    def remove(self) -> list[Path]:
        """Delete the snapshot and its journal (decommission); the files that were there."""
        removed = []
        # The snapshot first: a journal without it is never read.
        for path in (self.path, self.journal_path, self.payload_path):
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            removed.append(path)
        self._journal = None
        return removed

    # -- reading -----------------------------------------------------------------

    def load_payload(self) -> Payload | None:
        """The restore payload if it belongs to the persisted state as ``load`` would
        read it (same snapshot, a journal that changes nothing); None otherwise."""
        try:
            text = self.payload_path.read_bytes()
            snapshot = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            payload = restore_payload.read(text, snapshot)
            self._journal_adds_nothing(payload)
        except PayloadMismatch as error:
            log.info("%s not used (%s); restoring from %s", self.payload_path, error, self.path)
            return None
        return payload

    def _journal_adds_nothing(self, payload: Payload) -> None:
        """PayloadMismatch unless replaying the journal would leave the snapshot as it is."""
        try:
            raw = self.journal_path.read_bytes()
        except FileNotFoundError:
            return
        *complete, _torn = raw.split(b"\n")  # a torn last line is ignored by load too
        if not complete or not _decodes(complete[0]):
            return  # no header: load reads the snapshot alone
        if _json_line(complete[0]).get("journal") != payload.journal:
            return  # an older snapshot's journal: load ignores it
        for line in complete[1:]:
            try:
                entry = _json_line(line)
            except ValueError:
                entry = None
            if not restore_payload.empty_entry(entry, payload.revision):
                raise PayloadMismatch("the journal holds changes since the snapshot")

    def load(self) -> Applied | None:
        """The last applied state, None if there is none, PersistError if unusable."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            document = json.loads(text)
            generation = document.get("generation")
            state = state_from_data(document["state"])
            ident = document.get("journal")
            epoch = document.get("epoch")
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise self._refusal(self.path, error) from None
        if generation is not None and not isinstance(generation, int):
            raise PersistError(f"{self.path}: refusing persisted state: bad generation")
        if epoch is not None and not isinstance(epoch, str):
            raise PersistError(f"{self.path}: refusing persisted state: bad epoch")
        if not isinstance(ident, str):
            return Applied(state, generation, epoch)  # written before the journal existed
        journal = _Journal(ident, state.revision, len(text), 0, epoch)
        state, generation, clean = self._replay(journal, state, generation)
        # Appends continue only a journal that ends where its last complete
        # entry does and belongs to this snapshot; otherwise the next write
        # is a snapshot.  Loading itself writes nothing (the CLI loads too).
        self._journal = journal if clean else None
        return Applied(state, generation, epoch)

    def _replay(
        self, journal: _Journal, state: DesiredState, generation: int | None
    ) -> tuple[DesiredState, int | None, bool]:
        """The snapshot's state with the journal's deltas applied; False if not appendable."""
        try:
            raw = self.journal_path.read_bytes()
        except FileNotFoundError:
            return state, generation, False
        # Every complete line ends in "\n"; whatever follows the last one is
        # an append the crash interrupted.
        *complete, torn = raw.split(b"\n")
        try:
            header = _json_line(complete[0]) if complete else None
        except ValueError as error:
            raise self._refusal(self.journal_path, error, line=1) from None
        if not isinstance(header, dict) or header.get("journal") != journal.ident:
            # A journal of an older snapshot (the crash came between the two
            # renames): the snapshot alone is the state.
            return state, generation, False
        entries, unreadable = _readable_prefix(complete[1:])
        if unreadable and any(_decodes(line) for line in complete[1 + len(entries) + 1 :]):
            # Readable entries after an unreadable one: not an interrupted
            # append but a damaged file.
            damage = ValueError("an unreadable entry is followed by readable ones")
            raise self._refusal(self.journal_path, damage, line=len(entries) + 2) from None
        deltas: list[StateDelta] = []
        revision = state.revision
        for number, entry in enumerate(entries, start=2):
            try:
                delta = delta_from_data(entry["delta"])
                next_generation = entry.get("generation")
                if next_generation is not None and not isinstance(next_generation, int):
                    raise ModelError("generation", "not an integer")
                if delta.gateway != state.gateway or delta.from_revision != revision:
                    raise ModelError(
                        "delta",
                        f"r{delta.from_revision}->r{delta.to_revision} of {delta.gateway!r} does "
                        f"not continue revision {revision} of {state.gateway!r}",
                    )
            except (ValueError, KeyError, TypeError, AttributeError) as error:
                raise self._refusal(self.journal_path, error, line=number) from None
            deltas.append(delta)
            revision = delta.to_revision
            generation = next_generation
        try:
            state = patch_chain(state, deltas)
        except ModelError as error:
            raise self._refusal(self.journal_path, error) from None
        cut = unreadable + (1 if torn else 0)
        if cut:
            # A power loss in the middle of an append can leave the last
            # lines unwritten or zero-filled, and only the last ones: each
            # append is fsynced before the next.
            log.warning(
                "%s: ignoring the last %d entr%s (the write was interrupted); revision %d stands",
                self.journal_path,
                cut,
                "y" if cut == 1 else "ies",
                state.revision,
            )
        journal.revision = state.revision
        journal.journal_bytes = len(raw)
        journal.changed = any(map(_changes, deltas))
        return state, generation, not cut

    @staticmethod
    def _refusal(path: Path, error: Exception, line: int | None = None) -> PersistError:
        where = f"{path}" if line is None else f"{path} line {line}"
        reason = str(error) if isinstance(error, ModelError) else f"not a state file ({error})"
        return PersistError(f"{where}: refusing persisted state: {reason}")


def _json_line(line: bytes) -> Any:
    return json.loads(line.decode())


def _decodes(line: bytes) -> bool:
    try:
        return isinstance(_json_line(line), dict)
    except ValueError:
        return False


def _readable_prefix(lines: Sequence[bytes]) -> tuple[list[dict[str, Any]], int]:
    """The entries up to the first line that is not a JSON object; how many lines follow."""
    entries: list[dict[str, Any]] = []
    for index, line in enumerate(lines):
        try:
            entry = _json_line(line)
        except ValueError:
            return entries, len(lines) - index
        if not isinstance(entry, dict):
            return entries, len(lines) - index
        entries.append(entry)
    return entries, 0
