"""Last-known-good state on disk: what a rebooted gateway enforces first.

Written atomically (temporary file, fsync, rename) so a crash mid-write
leaves the previous state, never half of the new one.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgectl.model.errors import ModelError
from edgectl.model.policy import DesiredState
from edgectl.model.serial import state_from_data, state_to_data

FILE_NAME = "applied.json"


class PersistError(RuntimeError):
    pass


@dataclass(frozen=True)
class Applied:
    state: DesiredState
    # The kernel's ruleset generation right after our commit: if it is still
    # the same, nobody has committed anything since, so the kernel holds
    # exactly this state and no read-back is needed.
    generation: int | None


class StateStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / FILE_NAME

    def save(self, state: DesiredState, generation: int | None) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        document = {"generation": generation, "state": state_to_data(state)}
        handle, temporary = tempfile.mkstemp(dir=self.directory, prefix=".applied-")
        try:
            with os.fdopen(handle, "w") as file:
                json.dump(document, file, separators=(",", ":"))
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

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
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            reason = str(error) if isinstance(error, ModelError) else f"not a state file ({error})"
            raise PersistError(f"{self.path}: refusing persisted state: {reason}") from None
        if generation is not None and not isinstance(generation, int):
            raise PersistError(f"{self.path}: refusing persisted state: bad generation")
        return Applied(state, generation)
