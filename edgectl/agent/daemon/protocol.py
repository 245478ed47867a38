"""What the controller answers, as the agent reads it: no HTTP here.

``edgectl agent restore`` runs before the network is up and never asks the
controller, so it must not pay for importing the HTTP client (httpx and
its dependencies: 0.1-0.2 s of a gateway's start); the loop and the
restore path import these types from here, and only ``client`` imports httpx.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgectl.model.delta import StateDelta
from edgectl.model.errors import ModelError
from edgectl.model.policy import DesiredState
from edgectl.model.serial import StateColumns, delta_from_data, state_columns, state_from_data


class ControllerError(RuntimeError):
    """The controller could not be asked, or answered something unusable."""

    def __init__(self, message: str, *, status: int | None = None, detail: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail  # the error body's "detail" (FastAPI), None if it had none


@dataclass(frozen=True, slots=True)
class Snapshot:
    revision: int
    state: DesiredState
    # The controller store's epoch (None from a controller that predates it):
    # part of the cursor, sent back with the revision.
    epoch: str | None = None


@dataclass(frozen=True, slots=True)
class Delta:
    revision: int
    delta: StateDelta
    epoch: str | None = None


@dataclass(frozen=True, slots=True)
class ColumnSnapshot:
    """A snapshot checked whole, its entries still columns (``serial.state_columns``):
    for an agent with nothing applied, which writes the kernel before the model."""

    revision: int
    columns: StateColumns
    epoch: str | None = None


Answer = Snapshot | Delta | ColumnSnapshot


def parse_answer(document: object, *, columns: bool = False) -> Answer:
    """The desired-state envelope -> Snapshot or Delta; ControllerError if malformed.

    ``columns``: a snapshot whose entries pass the bulk checks comes as a
    ColumnSnapshot (no entry object built yet); any other as a Snapshot.
    """
    if not isinstance(document, dict):
        raise ControllerError("desired-state answer is not a JSON object")
    kind = document.get("kind")
    revision = document.get("revision")
    if isinstance(revision, bool) or not isinstance(revision, int):
        raise ControllerError("desired-state answer without an integer revision")
    epoch = document.get("epoch")
    if epoch is not None and not _is_epoch(epoch):
        raise ControllerError("desired-state answer with a malformed epoch")
    try:
        if kind == "snapshot" and columns:
            checked = state_columns(document.get("state"))
            if checked is not None:
                _same_revision(revision, checked.structure.revision)
                return ColumnSnapshot(revision, checked, epoch)
        if kind == "snapshot":
            state = state_from_data(document.get("state"))
            _same_revision(revision, state.revision)
            return Snapshot(revision, state, epoch)
        if kind == "delta":
            delta = delta_from_data(document.get("delta"))
            if delta.to_revision != revision:
                raise ControllerError(
                    f"delta says revision {revision} but ends at {delta.to_revision}"
                )
            return Delta(revision, delta, epoch)
    except ModelError as error:
        # Includes a schema newer than this agent reads: never half-apply it.
        raise ControllerError(f"controller sent an unusable {kind}: {error}") from None
    raise ControllerError(f"desired-state answer of unknown kind {kind!r}")


def _same_revision(said: int, held: int) -> None:
    if held != said:
        raise ControllerError(f"snapshot says revision {said} but holds {held}")


def _is_epoch(value: object) -> bool:
    """What the controller's ``epoch`` query parameter takes back: 1-32 hex digits."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= 32
        and all(c in "0123456789abcdef" for c in value)
    )
