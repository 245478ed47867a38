"""Policy files operators write by hand: TOML (or JSON), errors naming line or field."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from edgectl.model.errors import ModelError
from edgectl.model.policy import DesiredState
from edgectl.model.serial import state_from_data


class PolicyFileError(ValueError):
    pass


def load_policy(path: Path) -> DesiredState:
    """Parse and validate a policy file; PolicyFileError says where it is wrong."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise PolicyFileError(f"{path}: {error.strerror}") from None
    try:
        # tomllib's messages carry "(at line N, column M)".
        data = json.loads(raw) if path.suffix == ".json" else tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PolicyFileError(f"{path}: {error}") from None
    try:
        return state_from_data(data)
    except ModelError as error:
        raise PolicyFileError(f"{path}: {error}") from None
