"""``[controller.radius]`` and the clients file, checked once at start.

```toml
[controller.radius]
listen = ["0.0.0.0:1813", "[::]:1813"]      # or one string; absent or [] = off
clients = "/etc/edgectl/radius-clients.toml" # 0600/0400, owned by the controller's user
account = "User-Name"                        # or "Class", or {vendor = 3561, type = 1}
strip_realm = false                          # User-Name "cust-42@isp.example" -> "cust-42"
```

The clients file (TOML, its own file so the secrets can be 0600 while the
settings stay readable):

```toml
[[client]]
name = "bng-1"            # the sessions' source; a metric label
address = "192.0.2.10"    # an address or a prefix (longest match wins)
secret = "…"              # at least 16 characters (RFC 2865 3 prefers 16 octets)
```
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from edgectl.controller.errors import Invalid
from edgectl.controller.radius.events import CLASS, USER_NAME, AccountRule
from edgectl.model import ModelError, Prefix
from edgectl.tomlfile import TomlFileError, read_toml

TABLE = "controller.radius"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MIN_SECRET = 16


@dataclass(frozen=True, slots=True)
class Client:
    name: str
    network: Prefix
    secret: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Clients:
    """NAS address -> client, longest prefix first."""

    entries: tuple[Client, ...]

    def find(self, address: str) -> Client | None:
        """The client a datagram from ``address`` (as ``recvfrom`` gives it) belongs to."""
        if address.startswith("::ffff:") and "." in address:
            address = address.removeprefix("::ffff:")  # IPv4 on a dual-stack socket
        try:
            source = Prefix.parse(address.partition("%")[0])
        except ModelError:
            return None
        for client in self.entries:
            if client.network.contains(source):
                return client
        return None


@dataclass(frozen=True, slots=True)
class RadiusSettings:
    listen: tuple[tuple[str, int], ...]
    clients_file: Path
    clients: Clients
    account: AccountRule = field(default_factory=AccountRule)
    # Decoded packets waiting for a commit.  Beyond it packets are dropped
    # (and counted) and the NAS's retransmission is the back-pressure: memory
    # stays bounded (~1 KB a packet) however large the reconnect storm.
    max_queue: int = 20_000
    # Packets committed in one transaction at most.
    max_batch: int = 2_000
    # A retransmission (same NAS, Identifier and authenticator) within this
    # many seconds is answered from memory, not processed again.
    replay_window: float = 30.0


def _listen(value: object) -> tuple[tuple[str, int], ...]:
    path = f"{TABLE}.listen"
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise Invalid(path, "expected an address:port string or a list of them")
    found: list[tuple[str, int]] = []
    for index, item in enumerate(items):
        where = f"{path}[{index}]" if isinstance(value, list) else path
        if not isinstance(item, str):
            raise Invalid(where, 'expected a string such as "0.0.0.0:1813" or "[::]:1813"')
        host, colon, port_text = item.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
            version = 6
        else:
            version = 4
        try:
            address = Prefix.parse(host)
        except ModelError:
            address = None
        if not colon or address is None or address.version != version:
            raise Invalid(where, f"{item!r} is not ADDRESS:PORT (IPv6 as [ADDRESS]:PORT)")
        if not (port_text.isascii() and port_text.isdigit() and 0 < int(port_text) < 65536):
            raise Invalid(where, f"{item!r}: port must be 1..65535")
        if (host, int(port_text)) in found:
            raise Invalid(where, f"{item!r} is listed twice")
        found.append((host, int(port_text)))
    return tuple(found)


def _account(value: object) -> AccountRule:
    path = f"{TABLE}.account"
    if value == "User-Name":
        return AccountRule(USER_NAME)
    if value == "Class":
        return AccountRule(CLASS)
    if isinstance(value, dict):
        unknown = set(value) - {"vendor", "type"}
        if unknown:
            raise Invalid(f"{path}.{sorted(unknown)[0]}", "unknown key (vendor, type)")
        vendor, kind = value.get("vendor"), value.get("type")
        if isinstance(vendor, bool) or not isinstance(vendor, int) or not 0 < vendor < 1 << 24:
            raise Invalid(f"{path}.vendor", "expected an IANA enterprise number 1..16777215")
        if isinstance(kind, bool) or not isinstance(kind, int) or not 0 < kind < 256:
            raise Invalid(f"{path}.type", "expected a vendor attribute type 1..255")
        return AccountRule((vendor, kind))
    raise Invalid(path, 'expected "User-Name", "Class" or {vendor = N, type = N}')


def _number(table: Mapping[str, object], name: str, low: float, high: float) -> float | None:
    value = table.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise Invalid(f"{TABLE}.{name}", f"expected a number from {low:g} to {high:g}")
    return float(value)


def _private(path: Path) -> None:
    """Secrets readable by the controller's user alone, or we refuse to start."""
    where = f"{TABLE}.clients"
    try:
        info = path.stat()
    except OSError as error:
        raise Invalid(where, f"cannot read {path}: {error.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise Invalid(where, f"{path} is not a regular file")
    if info.st_mode & 0o077:
        mode = stat.S_IMODE(info.st_mode)
        raise Invalid(where, f"{path} holds shared secrets and is mode {mode:04o}; chmod 600 it")
    if info.st_uid != os.geteuid():
        raise Invalid(
            where, f"{path} is owned by uid {info.st_uid}, not the controller's ({os.geteuid()})"
        )


def load_clients(path: Path) -> Clients:
    _private(path)
    try:
        document = read_toml(path)
    except TomlFileError as error:
        raise Invalid(f"{TABLE}.clients", str(error)) from None
    unknown = set(document) - {"client"}
    if unknown:
        raise Invalid(f"{path}: {sorted(unknown)[0]}", "unknown key (expected [[client]] tables)")
    rows = document.get("client", [])
    if not isinstance(rows, list) or not rows:
        raise Invalid(f"{path}: client", "expected at least one [[client]] table")
    entries: list[Client] = []
    for index, row in enumerate(rows):
        where = f"{path}: client[{index}]"
        if not isinstance(row, dict):
            raise Invalid(where, "expected a table")
        extra = set(row) - {"name", "address", "secret"}
        if extra:
            raise Invalid(f"{where}.{sorted(extra)[0]}", "unknown key (name, address, secret)")
        name, address, secret = row.get("name"), row.get("address"), row.get("secret")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise Invalid(f"{where}.name", "expected 1-64 of A-Z a-z 0-9 . _ - (a metric label)")
        try:
            network = Prefix.parse(address, path=f"{where}.address")
        except ModelError as error:
            raise Invalid(error.path, error.reason) from None
        if network.length == 0:
            raise Invalid(f"{where}.address", "a client for every address is not a client list")
        if not isinstance(secret, str) or len(secret.encode()) < MIN_SECRET:
            raise Invalid(f"{where}.secret", f"expected at least {MIN_SECRET} characters")
        if len(secret.encode()) > 128:
            raise Invalid(f"{where}.secret", "longer than 128 octets")
        for other in entries:
            if other.network == network:
                raise Invalid(f"{where}.address", f"{network} is also client {other.name!r}")
        entries.append(Client(name, network, secret.encode()))
    entries.sort(key=lambda client: -client.network.length)
    return Clients(tuple(entries))


_KEYS = {
    "listen",
    "clients",
    "account",
    "strip_realm",
    "max_queue",
    "max_batch",
    "replay_window",
}


def parse(table: object) -> RadiusSettings | None:
    """``[controller.radius]`` checked (and its clients file read), or None when off."""
    if not isinstance(table, dict):
        raise Invalid(TABLE, "expected a table")
    for name in table:
        if name not in _KEYS:
            raise Invalid(f"{TABLE}.{name}", "unknown setting")
    listen = _listen(table.get("listen", []))
    if not listen:
        return None
    clients_path = table.get("clients")
    if not isinstance(clients_path, str) or not clients_path:
        raise Invalid(f"{TABLE}.clients", "a listening feed needs a clients file (path)")
    account = _account(table.get("account", "User-Name"))
    strip = table.get("strip_realm", False)
    if not isinstance(strip, bool):
        raise Invalid(f"{TABLE}.strip_realm", "expected true or false")
    if strip and account.key != USER_NAME:
        raise Invalid(f"{TABLE}.strip_realm", 'only applies to account = "User-Name"')
    queue = _number(table, "max_queue", 1, 1_000_000)
    batch = _number(table, "max_batch", 1, 50_000)
    replay = _number(table, "replay_window", 1, 3600)
    for name, number in (("max_queue", queue), ("max_batch", batch)):
        if number is not None and number != int(number):
            raise Invalid(f"{TABLE}.{name}", "expected an integer")
    path = Path(clients_path)
    defaults = RadiusSettings(listen, path, Clients(()))
    return RadiusSettings(
        listen=listen,
        clients_file=path,
        clients=load_clients(path),
        account=AccountRule(account.key, strip),
        max_queue=int(queue) if queue is not None else defaults.max_queue,
        max_batch=int(batch) if batch is not None else defaults.max_batch,
        replay_window=replay if replay is not None else defaults.replay_window,
    )
