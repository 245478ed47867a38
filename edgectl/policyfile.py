"""Policy files operators write by hand: TOML (or JSON), errors naming line or field."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgectl.model.errors import ModelError
from edgectl.model.policy import DesiredState
from edgectl.model.serial import StateColumns, exact_columns, state_from_data


class PolicyFileError(ValueError):
    pass


@dataclass(frozen=True)
class PolicyFile:
    state: DesiredState
    # The file's JSON text, when it is plain ASCII JSON: the state's document
    # exactly as it decoded, so a state file can hold it as written instead of
    # writing 200k keys out again (StateStore.save's ``state_json``).  None
    # for TOML, and for JSON another reader might decode differently (a BOM,
    # non-ASCII text the state file's encoding need not share).
    json_text: str | None


def _read_json(path: Path) -> tuple[Any, str | None]:
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise PolicyFileError(f"cannot read {path}: {error.strerror}") from None
    text = raw.decode("ascii") if raw.isascii() else None
    try:
        # json decodes bytes in any UTF encoding, the text as ASCII: the same value.
        return json.loads(raw if text is None else text), text
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PolicyFileError(f"{path}: {error}") from None


def read_policy_file(path: Path) -> PolicyFile:
    """Parse and validate a policy file; PolicyFileError says where it is wrong."""
    text: str | None = None
    if path.suffix == ".json":
        data, text = _read_json(path)
    else:
        # Here, not at the top: tomllib is ~3 ms of every ``edgectl apply -f``
        # of a JSON policy.
        from edgectl.tomlfile import TomlFileError, read_toml

        try:
            # The one TOML reader: its messages carry "(at line N, column M)".
            data = read_toml(path)
        except TomlFileError as error:
            raise PolicyFileError(str(error)) from None
    try:
        return PolicyFile(state_from_data(data), text)
    except ModelError as error:
        raise PolicyFileError(f"{path}: {error}") from None


def read_exact_columns(path: Path) -> tuple[StateColumns, str] | None:
    """A JSON policy file of single IPv4 keys, checked as ``read_policy_file``
    checks it, as key columns (serial.exact_columns), with its text; None
    for any other file or any doubt (``read_policy_file`` then says what)."""
    if path.suffix != ".json":
        return None
    data, text = _read_json(path)
    if text is None:
        return None
    columns = exact_columns(data)
    return None if columns is None else (columns, text)
