"""Check a change to the catalogue (rate-limit profiles, relays, pools) before any of it is made.

``edgectl catalogue check`` takes the catalogue an operator wants (the
Ansible inventory's ``edgectl_controller_rate_limits``, ``_relays`` and
``_pools``, each item with an optional ``state``) and, optionally, the
catalogue the controller holds now (its ``GET /v1/...`` listings), and
replays the API calls the catalogue entry point would make, in its order,
against a copy: every item is built by the model and every step is checked
with the controller's own rule (``refuse_new_problems``: the catalogue's
lint must not get worse).  So a bad inventory is refused as a whole before
the first call, instead of half-applied until the call the controller
refuses.  It needs no database and no running controller.

The order is the one ``ansible/roles/edgectl_controller/tasks/catalogue.yml``
applies: profiles, relays, pools that should exist; then pools, relays,
profiles that should not (a pool stops naming a profile before the profile
goes).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgectl.controller.compile import Catalogue
from edgectl.controller.errors import Invalid
from edgectl.controller.store.catalog import refuse_new_problems
from edgectl.model import ModelError, Pool, RateLimitProfile, Relay
from edgectl.model.serial import pool_from_data, profile_from_data, relay_from_data

KINDS = ("rate_limits", "relays", "pools")
STATES = ("present", "absent")


@dataclass
class _World:
    """The catalogue as the replayed calls leave it, and who serves each pool."""

    catalogue: Catalogue
    served: dict[str, list[str]] = field(default_factory=dict)


def _items(document: Mapping[str, Any], kind: str, path: str) -> list[Any]:
    items = document.get(kind, [])
    if items is None:
        return []
    if not isinstance(items, list):
        raise ModelError(path, f"expected a list, got {type(items).__name__}")
    return items


def _current(data: object) -> _World:
    """The controller's catalogue from its listings (``GET /v1/rate-limits`` ...)."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ModelError("current", f"expected an object, got {type(data).__name__}")
    profiles: dict[str, RateLimitProfile] = {}
    for index, item in enumerate(_items(data, "rate_limits", "current.rate_limits")):
        profile = profile_from_data(item, f"current.rate_limits[{index}]")
        profiles[profile.name] = profile
    relays = tuple(
        relay_from_data(item, f"current.relays[{index}]")
        for index, item in enumerate(_items(data, "relays", "current.relays"))
    )
    pools: dict[str, Pool] = {}
    served: dict[str, list[str]] = {}
    for index, item in enumerate(_items(data, "pools", "current.pools")):
        if isinstance(item, Mapping):
            gateways = item.get("gateways") or []
            item = {k: v for k, v in item.items() if k != "gateways"}
        else:
            gateways = []
        pool = pool_from_data(item, f"current.pools[{index}]")
        pools[pool.name] = pool
        served[pool.name] = [str(g) for g in gateways]
    return _World(Catalogue(pools=pools, relays=relays, profiles=profiles), served)


def _label(kind: str, index: int, item: object) -> str:
    name = item.get("name") if isinstance(item, Mapping) else None
    return f"{kind}[{index}]" + (f" ({name})" if isinstance(name, str) else "")


def _state(item: object, label: str) -> str:
    state = item.get("state", "present") if isinstance(item, Mapping) else "present"
    if state not in STATES:
        raise ModelError(f"{label}.state", f"{state!r} is not one of {', '.join(STATES)}")
    return str(state)


def _name(item: object, label: str) -> str:
    name = item.get("name") if isinstance(item, Mapping) else None
    if not isinstance(name, str) or not name:
        raise ModelError(f"{label}.name", "field is required")
    return name


def _fields(item: object) -> object:
    if not isinstance(item, Mapping):
        return item
    return {k: v for k, v in item.items() if k != "state"}


def _put_profile(world: _World, profile: RateLimitProfile, label: str) -> None:
    profiles = {**world.catalogue.profiles, profile.name: profile}
    world.catalogue = replace(world.catalogue, profiles=profiles)


def _put_relay(world: _World, relay: Relay, label: str) -> None:
    before = world.catalogue
    relays = (*(r for r in before.relays if r.name != relay.name), relay)
    after = replace(before, relays=relays)
    _refuse_new_problems(before, after, label)
    world.catalogue = after


def _put_pool(world: _World, pool: Pool, label: str) -> None:
    before = world.catalogue
    if pool.rate_limit is not None and pool.rate_limit not in before.profiles:
        raise ModelError(f"{label}.rate_limit", f"no rate-limit profile named {pool.rate_limit!r}")
    after = replace(before, pools={**before.pools, pool.name: pool})
    _refuse_new_problems(before, after, label)
    world.catalogue = after
    world.served.setdefault(pool.name, [])


def _refuse_new_problems(before: Catalogue, after: Catalogue, label: str) -> None:
    try:
        refuse_new_problems(before, after, "prefixes")
    except Invalid as error:
        raise ModelError(f"{label}.{error.path}", error.reason) from None


def _delete_profile(world: _World, name: str, label: str) -> None:
    users = sorted(p.name for p in world.catalogue.pools.values() if p.rate_limit == name)
    if users:
        used = ", ".join(users)
        raise ModelError(label, f"rate-limit profile {name!r} is used by pool(s) {used}")
    profiles = {k: v for k, v in world.catalogue.profiles.items() if k != name}
    world.catalogue = replace(world.catalogue, profiles=profiles)


def _delete_relay(world: _World, name: str, label: str) -> None:
    relays = tuple(r for r in world.catalogue.relays if r.name != name)
    world.catalogue = replace(world.catalogue, relays=relays)


def _delete_pool(world: _World, name: str, label: str) -> None:
    gateways = world.served.get(name, [])
    if gateways:
        raise ModelError(
            label, f"pool {name!r} is served by {', '.join(gateways)}; detach it first"
        )
    pools = {k: v for k, v in world.catalogue.pools.items() if k != name}
    world.catalogue = replace(world.catalogue, pools=pools)
    world.served.pop(name, None)


_BUILD: dict[str, Callable[[Any, str], Any]] = {
    "rate_limits": profile_from_data,
    "relays": relay_from_data,
    "pools": pool_from_data,
}
_PUT: dict[str, Callable[[_World, Any, str], None]] = {
    "rate_limits": _put_profile,
    "relays": _put_relay,
    "pools": _put_pool,
}
_DELETE: dict[str, Callable[[_World, str, str], None]] = {
    "rate_limits": _delete_profile,
    "relays": _delete_relay,
    "pools": _delete_pool,
}


def check(document: object) -> list[ModelError]:
    """Every problem the catalogue change in ``document`` would meet, in the order met.

    ``document``: ``{"rate_limits": [...], "relays": [...], "pools": [...],
    "current": {...the controller's listings...}}``; every key is optional.
    """
    if not isinstance(document, Mapping):
        return [ModelError("", f"expected an object, got {type(document).__name__}")]
    unknown = sorted(set(document) - {*KINDS, "current"})
    if unknown:
        return [ModelError(unknown[0], f"unknown key (known: {', '.join([*KINDS, 'current'])})")]
    try:
        world = _current(document.get("current"))
    except ModelError as error:
        return [error]
    problems: list[ModelError] = []
    wanted: dict[str, list[tuple[str, int, Any, str]]] = {}
    seen: dict[str, set[str]] = {}
    for kind in KINDS:
        wanted[kind] = []
        seen[kind] = set()
        try:
            items = _items(document, kind, kind)
        except ModelError as error:
            problems.append(error)
            continue
        for index, item in enumerate(items):
            label = _label(kind, index, item)
            try:
                state, name = _state(item, label), _name(item, label)
            except ModelError as error:
                problems.append(error)
                continue
            if name in seen[kind]:
                problems.append(ModelError(f"{label}.name", f"{name!r} is listed twice"))
                continue
            seen[kind].add(name)
            wanted[kind].append((state, index, item, label))
    # Create and update first (profiles before the pools that name them), then
    # delete in the reverse order (pools before the profiles they name).
    for kind in KINDS:
        for state, _index, item, label in wanted[kind]:
            if state != "present":
                continue
            try:
                built = _BUILD[kind](_fields(item), label)
                _PUT[kind](world, built, label)
            except ModelError as error:
                problems.append(error)
    for kind in reversed(KINDS):
        for state, _index, item, label in wanted[kind]:
            if state != "absent":
                continue
            try:
                _DELETE[kind](world, _name(item, label), label)
            except ModelError as error:
                problems.append(error)
    return problems


def _read(source: str) -> object:
    text = sys.stdin.read() if source == "-" else Path(source).read_text()
    return json.loads(text)


def command(args: argparse.Namespace) -> int:
    try:
        document = _read(args.file)
    except (OSError, ValueError) as error:
        print(f"edgectl catalogue check: cannot read {args.file}: {error}", file=sys.stderr)
        return 2
    problems = check(document)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(
            f"edgectl catalogue check: {len(problems)} problem(s); nothing was changed",
            file=sys.stderr,
        )
        return 2
    assert isinstance(document, Mapping)  # check() refuses anything else
    listed = ", ".join(f"{len(document.get(k) or [])} {k.replace('_', '-')}" for k in KINDS)
    print(f"catalogue ok: {listed}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    catalogue = subparsers.add_parser(
        "catalogue", help="check a catalogue change (profiles, relays, pools) offline"
    )
    actions = catalogue.add_subparsers(dest="action", required=True)
    check_parser = actions.add_parser(
        "check",
        help="replay a catalogue change against the controller's rules without a controller; "
        "exit 2 listing every problem",
    )
    check_parser.add_argument(
        "file",
        nargs="?",
        default="-",
        help='JSON {"rate_limits": [...], "relays": [...], "pools": [...], '
        '"current": {...}} (items may carry "state": "absent"; "current" holds the '
        "controller's GET /v1/... listings); - reads stdin (default)",
    )
    check_parser.set_defaults(func=command)
