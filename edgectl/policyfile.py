"""Policy files operators write by hand: TOML (or JSON), errors naming line or field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgectl.model.errors import ModelError
from edgectl.model.policy import DesiredState
from edgectl.model.serial import state_from_data
from edgectl.tomlfile import TomlFileError, read_toml


class PolicyFileError(ValueError):
    pass


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except OSError as error:
        raise PolicyFileError(f"cannot read {path}: {error.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PolicyFileError(f"{path}: {error}") from None


def load_policy(path: Path) -> DesiredState:
    """Parse and validate a policy file; PolicyFileError says where it is wrong."""
    if path.suffix == ".json":
        data = _read_json(path)
    else:
        try:
            # The one TOML reader: its messages carry "(at line N, column M)".
            data = read_toml(path)
        except TomlFileError as error:
            raise PolicyFileError(str(error)) from None
    try:
        return state_from_data(data)
    except ModelError as error:
        raise PolicyFileError(f"{path}: {error}") from None
