"""The error a subcommand raises to end with a message and an exit code.

Its own module because ``edgectl.cli`` catches it without importing any
subcommand's module (see there why).
"""

from __future__ import annotations

EXIT_INVALID = 2


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_INVALID) -> None:
        super().__init__(message)
        self.code = code
