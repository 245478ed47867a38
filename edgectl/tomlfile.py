"""Read a TOML file, with one error that says which file and where in it.

The controller's settings and the agent's config both read TOML; this is
the one place that turns I/O and syntax failures into a message.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any


class TomlFileError(ValueError):
    pass


def read_toml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise TomlFileError(f"cannot read {path}: {error.strerror}") from None
    try:
        # tomllib's messages carry "(at line N, column M)".
        return tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise TomlFileError(f"{path}: {error}") from None
