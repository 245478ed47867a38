"""The one config reader: TOML files into checked, typed settings.

A config is a frozen dataclass whose fields are its settings; a field's type
says what the file may hold (``str``, ``bool``, ``int``, ``float``, ``Path``,
each optionally ``| None``), its default says whether it is required, and
``setting(...)`` adds bounds, choices or a parser of its own.  One reader
(``read_table``) turns a TOML table into those values, and ``check_bounds``
enforces the declared bounds, so the controller's settings, the agent's and
the portal's config all refuse a bad value the same way: a ``ConfigError``
naming the field (``agent.poll_wait``) and the reason.

What several configs check alike lives here too: the controller URL a client
talks to (plain HTTP only to loopback unless allowed) and a token file (one
token, never readable by others).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import stat
import tomllib
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

_SPEC = "edgectl.setting"
T = TypeVar("T")
_BOOLS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


class TomlFileError(ValueError):
    """The file cannot be read or is not TOML (the message says where)."""


class ConfigError(ValueError):
    """A config problem; ``field`` is the dotted name an operator looks for."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


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


def read_document(path: Path) -> dict[str, Any]:
    """``read_toml``, its failure a ConfigError of the field ``config``."""
    try:
        return read_toml(path)
    except TomlFileError as error:
        raise ConfigError("config", str(error)) from None


# --- declaring settings -------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Spec:
    """What a field's type does not say: its bounds, choices or own parser."""

    low: float | None = None
    high: float | None = None
    unit: str = ""
    choices: tuple[str, ...] = ()
    # Parses the file's value (raising ValueError with the reason) instead of
    # the type's own check: a HOST:PORT, a sub-table.
    parse: Callable[[Any], Any] | None = None
    # A path must be absolute (a service's working directory is no anchor).
    absolute: bool = False


def setting(
    default: Any = dataclasses.MISSING,
    *,
    low: float | None = None,
    high: float | None = None,
    unit: str = "",
    choices: tuple[str, ...] = (),
    parse: Callable[[Any], Any] | None = None,
    absolute: bool = False,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field with a declared ``Spec`` (no default: required)."""
    spec = Spec(low, high, unit, choices, parse, absolute)
    metadata = {_SPEC: spec}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _spec(field: dataclasses.Field[Any]) -> Spec:
    found = field.metadata.get(_SPEC)
    return found if isinstance(found, Spec) else Spec()


def _base(kind: Any) -> Any:
    """``X | None`` -> X."""
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        rest = [arg for arg in typing.get_args(kind) if arg is not type(None)]
        return rest[0] if len(rest) == 1 else kind
    return kind


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _convert(kind: Any, spec: Spec, value: object, name: str) -> object:
    if spec.parse is not None:
        try:
            return spec.parse(value)
        except ConfigError:
            raise  # it names a field inside this one already
        except ValueError as error:
            raise ConfigError(name, str(error)) from None
    base = _base(kind)
    if base is bool:
        if not isinstance(value, bool):
            raise ConfigError(name, "expected true or false")
        return value
    if base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(name, "expected an integer")
        return value
    if base is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            what = f"a number of {spec.unit}" if spec.unit else "a number"
            raise ConfigError(name, f"expected {what}")
        return float(value)
    if base is str or base is Path:
        if not isinstance(value, str):
            raise ConfigError(name, "expected a string")
        if base is Path:
            if spec.absolute and not Path(value).is_absolute():
                raise ConfigError(name, "must be an absolute path")
            return Path(value)
        return value
    raise TypeError(f"{name}: no reader for {kind!r}")  # a declaration mistake, not input


def _from_text(kind: Any, text: str, name: str) -> object:
    """A value given as text (an environment variable) in the field's type."""
    base = _base(kind)
    if base is bool:
        if text.lower() not in _BOOLS:
            raise ConfigError(name, f"{text!r} is not true or false")
        return _BOOLS[text.lower()]
    if base in (int, float):
        try:
            return int(text) if base is int else float(text)
        except ValueError:
            raise ConfigError(name, f"{text!r} is not a number") from None
    if base is Path:
        return Path(text)
    return text


def _fields(cls: type) -> tuple[dict[str, Any], list[dataclasses.Field[Any]]]:
    return typing.get_type_hints(cls), list(dataclasses.fields(cls))


def read_table(cls: type, table: Mapping[str, Any], where: str) -> dict[str, object]:
    """The values ``table`` (the ``[where]`` table) gives for ``cls``'s fields: unknown
    names refused, required ones demanded, each in its declared type."""
    kinds, fields = _fields(cls)
    known = {field.name for field in fields}
    for name in table:
        if name not in known:
            raise ConfigError(f"{where}.{name}", "unknown setting")
    values: dict[str, object] = {}
    for field in fields:
        if field.name in table:
            name = f"{where}.{field.name}"
            values[field.name] = _convert(kinds[field.name], _spec(field), table[field.name], name)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}.{field.name}", "required")
    return values


def read_section(
    cls: type[T], document: Mapping[str, Any], table: str, *, required: bool = True
) -> T:
    """``cls`` built from the document's ``[table]`` (absent and not required: all
    defaults), its declared bounds checked."""
    values = document.get(table, None if required else {})
    if not isinstance(values, dict):
        raise ConfigError(table, f"missing [{table}] table" if values is None else "not a table")
    built = cls(**read_table(cls, values, table))
    check_bounds(built, table)
    return built


def read_environment(
    cls: type, env: Mapping[str, str], prefix: str, skip: Iterable[str] = ()
) -> dict[str, object]:
    """Values from ``PREFIX<FIELD>`` variables (text, in the field's type)."""
    kinds, fields = _fields(cls)
    values: dict[str, object] = {}
    for field in fields:
        variable = prefix + field.name.upper()
        if field.name not in skip and variable in env:
            values[field.name] = _from_text(kinds[field.name], env[variable], variable)
    return values


def check_bounds(config: object, where: str | None = None) -> None:
    """Every declared bound and choice of a built config holds (the error names the
    field, under ``where`` when given)."""
    for field in dataclasses.fields(config):  # type: ignore[arg-type]
        spec = _spec(field)
        value = getattr(config, field.name)
        name = f"{where}.{field.name}" if where else field.name
        unit = f" {spec.unit}" if spec.unit else ""
        if spec.choices and value not in spec.choices:
            raise ConfigError(name, f"must be one of {', '.join(spec.choices)}")
        if value is None or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if spec.low is not None and spec.high is not None:
            if not spec.low <= value <= spec.high:
                low, high = _number(spec.low), _number(spec.high)
                raise ConfigError(name, f"must be between {low} and {high}{unit}")
        elif spec.low is not None and value < spec.low:
            raise ConfigError(name, f"must be at least {_number(spec.low)}{unit}")


# --- checks several configs share ---------------------------------------------


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def controller_url(url: str, allow_plain_http: bool, name: str) -> str:
    """The controller URL a client talks to, without its trailing slash; plain HTTP
    to anything but loopback only when ``allow_plain_http`` says a TLS proxy is in front."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(name, f"{url!r} is not an http(s):// URL")
    if parts.query or parts.fragment:
        raise ConfigError(name, "must not carry a query or fragment")
    if parts.scheme == "http" and not is_loopback(parts.hostname) and not allow_plain_http:
        # The bearer token would cross the network in clear.
        raise ConfigError(
            name,
            "plain http to a non-loopback controller sends the token in clear; use https "
            "(or allow_plain_http = true behind a TLS-terminating proxy)",
        )
    return url.rstrip("/")


def read_token(path: Path, name: str) -> str:
    """A bearer token from ``path``, refusing a file others can read or write."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as error:
        raise ConfigError(name, f"cannot open {path}: {error.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(name, f"{path} is not a regular file")
        if info.st_mode & (stat.S_IROTH | stat.S_IWOTH):
            raise ConfigError(name, f"{path} is world-readable or world-writable; chmod 600 it")
        raw = os.read(fd, 4096)
    finally:
        os.close(fd)
    try:
        token = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ConfigError(name, f"{path} does not hold an ASCII token") from None
    if not token or any(c.isspace() for c in token) or len(token) > 256:
        raise ConfigError(name, f"{path} must hold exactly one token (one line, no spaces)")
    return token
