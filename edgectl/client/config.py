"""Where the controller is and which token to show it.

In order: ``--controller``/``--ca-file`` options, then ``EDGECTL_URL``,
``EDGECTL_TOKEN`` and ``EDGECTL_CA_FILE``, then the client config file
(``--client-config``, ``$EDGECTL_CLIENT_CONFIG`` or
``~/.config/edgectl/client.toml``; keys ``url``, ``token``, ``ca_file`` in a
``[client]`` table).  A config file holding a token that its group or others
can read is refused, as ssh refuses such a key: the token is a password.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from edgectl.client.errors import UsageError
from edgectl.tomlfile import ConfigError, read_document, read_section

DEFAULT_URL = "http://127.0.0.1:8470"
TABLE = "client"


@dataclass(frozen=True)
class _ClientFile:
    """The ``[client]`` table: what the file may say."""

    url: str | None = None
    token: str | None = None
    ca_file: str | None = None


@dataclass(frozen=True)
class ClientConfig:
    url: str
    token: str | None
    ca_file: Path | None


def default_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "edgectl" / "client.toml"


def read_file(path: Path, *, required: bool) -> _ClientFile:
    try:
        info = path.stat()
    except FileNotFoundError:
        if required:
            raise UsageError(f"client config {path} does not exist") from None
        return _ClientFile()
    except OSError as error:
        raise UsageError(f"cannot read client config {path}: {error.strerror}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UsageError(
            f"client config {path} is readable by group or others "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); it holds a token: chmod 600 {path}"
        )
    try:
        return read_section(_ClientFile, read_document(path), TABLE, required=False)
    except ConfigError as error:
        raise UsageError(f"client config {path}: {error}") from None


def resolve(
    controller: str | None,
    ca_file: str | None,
    config_path: str | None,
    environ: dict[str, str] | None = None,
) -> ClientConfig:
    env = os.environ if environ is None else environ
    explicit = config_path or env.get("EDGECTL_CLIENT_CONFIG")
    path = Path(explicit) if explicit else default_path()
    from_file = read_file(path, required=explicit is not None)
    url = controller or env.get("EDGECTL_URL") or from_file.url or DEFAULT_URL
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"--controller: {url!r} must start with http:// or https://")
    token = env.get("EDGECTL_TOKEN") or from_file.token
    ca = ca_file or env.get("EDGECTL_CA_FILE") or from_file.ca_file
    return ClientConfig(url.rstrip("/"), token, Path(ca) if ca else None)
