"""Helpers for the RADIUS feed's unit tests: a clients file, a NAS socket, a fake store."""

from __future__ import annotations

import socket
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgectl.controller.radius import codec
from edgectl.controller.store.feed import AccountingEvent, EventOutcome

SECRET = "bng-one-secret-0123"


def clients_file(directory: Path, *rows: tuple[str, str, str], mode: int = 0o600) -> Path:
    path = directory / "radius-clients.toml"
    path.write_text(
        "".join(
            f'[[client]]\nname = "{name}"\naddress = "{address}"\nsecret = "{secret}"\n'
            for name, address, secret in rows
        )
    )
    path.chmod(mode)
    return path


class Nas:
    """A BNG's accounting client on a UDP socket of its own."""

    def __init__(self, server: tuple[str, int], words: Any, secret: str = SECRET) -> None:
        self.server = server
        self.words = words
        self.secret = secret.encode()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))

    def packet(self, identifier: int, **attributes: Any) -> bytes:
        named = {key.replace("_", "-"): value for key, value in attributes.items()}
        return codec.encode_request(self.secret, identifier, named, self.words)

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, self.server)

    def answer(self, timeout: float) -> bytes | None:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(4096)
        except TimeoutError:
            return None

    def close(self) -> None:
        self.sock.close()


class FakeFeed:
    """Records each ``apply`` call; can be held (to see that nothing is answered
    before the commit returns) or made to fail."""

    def __init__(self) -> None:
        self.calls: list[list[AccountingEvent]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.failing = False
        self.status: dict[str, str] = {}  # account -> outcome status

    def apply(self, events: Sequence[AccountingEvent]) -> list[EventOutcome]:
        self.entered.set()
        self.gate.wait()
        if self.failing:
            raise RuntimeError("database is down")
        self.calls.append(list(events))
        return [EventOutcome(self.status.get(e.account or "", "applied")) for e in events]  # type: ignore[arg-type]

    @property
    def events(self) -> list[AccountingEvent]:
        return [event for call in self.calls for event in call]
