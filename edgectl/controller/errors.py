"""Errors the store raises and the API maps to HTTP statuses.

Kept free of FastAPI and SQLAlchemy so that the store, the compiler and the
CLI can raise them and each front end decides how to show them.
"""

from __future__ import annotations


class ControllerError(Exception):
    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ControllerError):
    status = 404


class Conflict(ControllerError):
    status = 409


class Invalid(ControllerError):
    """Input the model or a guard rail refuses; ``path`` names the field."""

    status = 422

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.path = path
        self.reason = reason
