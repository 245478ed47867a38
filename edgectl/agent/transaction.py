"""A transaction built as data: printing it gives the exact nft script it runs.

Golden tests compare ``str(transaction)``; the runner hands the same text to
libnftables, which commits it as one netlink batch (all or nothing).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from edgectl.agent.table import SPEC


@dataclass(frozen=True)
class ElementOp:
    """``add``/``delete`` of plain keys (no intervals, no map data) in one set."""

    verb: str
    set_name: str
    # (address text, timeout in seconds or None)
    elements: tuple[tuple[str, int | None], ...]


@dataclass
class Transaction:
    commands: list[str] = field(default_factory=list)
    # What the transaction does, for logs and ``plan``: "full sync", "delta r3->r5".
    summary: str = ""
    # The same transaction as key operations, when it is nothing else:
    # what lets a delta bypass libnftables (see kernel_write).
    key_ops: list[ElementOp] = field(default_factory=list)
    only_key_ops: bool = True

    def add(self, command: str) -> None:
        self.commands.append(command)
        self.only_key_ops = False

    def keys(self, verb: str, set_name: str, keys: Iterable[tuple[str, int | None]]) -> None:
        """``add``/``delete element`` of plain keys, optionally with timeouts."""
        listed = tuple(keys)
        if listed:
            self.key_ops.append(ElementOp(verb, set_name, listed))
            self.commands.append(
                _element_command(
                    verb,
                    set_name,
                    (
                        key if timeout is None else f"{key} timeout {timeout}s"
                        for key, timeout in listed
                    ),
                )
            )

    def elements(self, verb: str, set_name: str, elements: Iterable[str]) -> None:
        """``add``/``delete element`` of many elements as one command.

        One command per set, not per element: nft parses one long list about
        as fast as a hand-written ``elements = { ... }`` block.
        """
        listed = list(elements)
        if listed:
            self.commands.append(_element_command(verb, set_name, listed))
            self.only_key_ops = False

    def __bool__(self) -> bool:
        return bool(self.commands)

    def __str__(self) -> str:
        return "".join(f"{command}\n" for command in self.commands)


def _element_command(verb: str, set_name: str, elements: Iterable[str]) -> str:
    body = ",\n\t".join(elements)
    return f"{verb} element {SPEC} {set_name} {{\n\t{body}\n}}"
