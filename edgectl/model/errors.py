"""Errors raised by the model: each names the offending field and the reason."""

from __future__ import annotations


class ModelError(ValueError):
    """A value that cannot be part of a policy.

    ``path`` names the field (``pools[dyn-a].prefixes[0]``) so that an API,
    a CLI or a policy-file loader can point the operator at it.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.path = path
        self.reason = reason

    def under(self, parent: str) -> ModelError:
        """The same error with ``parent`` prepended to its path."""
        if not parent:
            return self
        if not self.path:
            return ModelError(parent, self.reason)
        joiner = "" if self.path.startswith("[") else "."
        return ModelError(f"{parent}{joiner}{self.path}", self.reason)
