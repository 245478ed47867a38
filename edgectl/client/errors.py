"""The client's failures, each with the exit code the command returns.

0 done, 1 refused by the API, 2 usage, 3 controller unreachable or TLS failure:
a script can tell "the controller said no" from "I could not ask".
"""

from __future__ import annotations

REFUSED = 1
USAGE = 2
UNREACHABLE = 3


class ClientError(Exception):
    code = USAGE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(ClientError):
    code = USAGE


class Refused(ClientError):
    """The API answered with an error; ``message`` is its own, naming the field."""

    code = REFUSED

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class Unreachable(ClientError):
    code = UNREACHABLE
