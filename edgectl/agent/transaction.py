"""A transaction built as data: printing it gives the exact nft script it runs.

Golden tests compare ``str(transaction)``; the runner hands the same text to
libnftables, which commits it as one netlink batch (all or nothing).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

TABLE = "inet edgectl"


@dataclass
class Transaction:
    commands: list[str] = field(default_factory=list)
    # What the transaction does, for logs and ``plan``: "full sync", "delta r3->r5".
    summary: str = ""

    def add(self, command: str) -> None:
        self.commands.append(command)

    def elements(self, verb: str, set_name: str, elements: Iterable[str]) -> None:
        """``add``/``delete element`` of many elements as one command.

        One command per set, not per element: nft parses one long list about
        as fast as a hand-written ``elements = { ... }`` block.
        """
        listed = list(elements)
        if listed:
            body = ",\n\t".join(listed)
            self.commands.append(f"{verb} element {TABLE} {set_name} {{\n\t{body}\n}}")

    def __bool__(self) -> bool:
        return bool(self.commands)

    def __str__(self) -> str:
        return "".join(f"{command}\n" for command in self.commands)
