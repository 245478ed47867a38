"""``edgectl controller`` and ``edgectl token``: registered into the main CLI by ``register``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgectl.controller.auth import Role
from edgectl.controller.errors import ControllerError
from edgectl.controller.settings import Settings, load


def _settings(args: argparse.Namespace) -> Settings:
    config: Path | None = args.config
    return load(config)


def _fail(error: ControllerError) -> int:
    print(f"edgectl: {error.message}", file=sys.stderr)
    return 2


def controller(args: argparse.Namespace) -> int:
    try:
        settings = _settings(args)
        if args.action == "migrate":
            from edgectl.controller.store import Store

            Store.open(settings.database_url, migrate=True).close()
            print("database is at the latest schema")
            return 0
        if args.action == "load-policies":
            return _load_policies(settings, args.file)
        if args.action == "new-epoch":
            return _new_epoch(settings)
        from edgectl.controller.server import serve

        serve(settings)
    except ControllerError as error:
        return _fail(error)
    return 0


def _load_policies(settings: Settings, file: Path | None) -> int:
    """Escalation policies from a TOML or JSON file (``[[policy]]`` tables), all or none."""
    import json
    import tomllib

    from edgectl.controller.errors import Invalid
    from edgectl.controller.store import Store, policies

    if file is None:
        raise Invalid("file", "load-policies needs a file")
    try:
        text = file.read_text()
        data = json.loads(text) if file.suffix == ".json" else tomllib.loads(text)
    except (OSError, ValueError) as error:
        raise Invalid(str(file), str(error)) from None
    store = Store.open(settings.database_url, migrate=settings.migrate_on_start)
    try:
        for name in policies.load(store, f"cli:{file.name}", data):
            print(f"policy {name}: loaded")
    finally:
        store.close()
    return 0


def _new_epoch(settings: Settings) -> int:
    """A new store epoch: every agent's next answer is a snapshot.

    Run it after restoring the database from a backup (before or after the
    controllers start): agents that applied revisions the backup does not
    hold then never get a delta against a history they did not see.
    """
    from edgectl.controller.store import Store
    from edgectl.controller.store import epoch as store_epoch

    store = Store.open(settings.database_url, migrate=settings.migrate_on_start)
    try:
        if not store.database.at_latest_schema():
            raise ControllerError(
                "the database is not at this version's schema: run `edgectl controller "
                "migrate` (same --config) first"
            )
        epoch = store_epoch.rotate(store, "cli:new-epoch", "operator: edgectl controller new-epoch")
    finally:
        store.close()
    print(f"store epoch is now {epoch}; every agent gets a snapshot next")
    return 0


def token(args: argparse.Namespace) -> int:
    from edgectl.controller.store import Store, tokens

    try:
        settings = _settings(args)
        store = Store.open(settings.database_url, migrate=settings.migrate_on_start)
        try:
            if not settings.migrate_on_start and not store.database.at_latest_schema():
                # Without this the first query fails with a traceback ("no such table").
                raise ControllerError(
                    "the database is not at this version's schema and migrate_on_start is "
                    "false: run `edgectl controller migrate` (same --config) first"
                )
            if args.action == "create":
                # The token itself goes to stdout alone, for `TOKEN=$(edgectl token create ...)`.
                print(tokens.create(store, args.name, Role(args.role)))
            elif args.action == "list":
                for entry in tokens.listing(store):
                    print(f"{entry['name']}\t{entry['role']}\t{entry['created_at']}")
            else:
                tokens.revoke(store, args.name)
        finally:
            store.close()
    except ControllerError as error:
        return _fail(error)
    return 0


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML settings file ([controller] table); default $EDGECTL_CONTROLLER_CONFIG "
        "or /etc/edgectl/controller.toml; EDGECTL_CONTROLLER_<SETTING> variables override it",
    )


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    serve = subparsers.add_parser("controller", help="run the controller (REST API)")
    serve.add_argument(
        "action",
        nargs="?",
        choices=("serve", "migrate", "load-policies", "new-epoch"),
        default="serve",
        help="serve the API (default; migrates first unless migrate_on_start = false), "
        "only bring the database to the latest schema, create/replace the escalation "
        "policies of FILE, or start a new store epoch (after restoring a backup: every "
        "agent is sent a snapshot)",
    )
    serve.add_argument("file", nargs="?", type=Path, help="with load-policies: TOML or JSON")
    _config_option(serve)
    serve.set_defaults(func=controller)

    tokens = subparsers.add_parser("token", help="manage API tokens on the controller host")
    actions = tokens.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a token and print it once")
    create.add_argument(
        "--role", required=True, choices=[r.value for r in Role if r is not Role.AGENT]
    )
    create.add_argument("--name", required=True, help="who or what holds it (audit log actor)")
    listing = actions.add_parser("list", help="list token names and roles (never the tokens)")
    revoke = actions.add_parser("revoke", help="delete a token")
    revoke.add_argument("name")
    for parser in (create, listing, revoke):
        _config_option(parser)
        parser.set_defaults(func=token)
