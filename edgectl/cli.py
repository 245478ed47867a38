"""The ``edgectl`` command: dataplane subcommands, and the controller's."""

from __future__ import annotations

import argparse
import gc
import importlib
import sys
from collections.abc import Sequence

from edgectl import __version__
from edgectl.cli_error import CliError

# Which module registers which commands, in the order ``--help`` lists them.
# Only the module of the command being run is imported: importing them all
# costs ~1.2 s (SQLAlchemy, alembic, pyroute2, httpx), which every
# ``edgectl agent restore`` at boot - the gateway forwards nothing until it
# has finished - and every ``edgectl apply`` would pay before its first step.
REGISTRARS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("edgectl.agent.cli", ("render", "plan", "apply", "show")),
    ("edgectl.agent.daemon.cli", ("agent",)),
    ("edgectl.controller.cli", ("controller", "token")),
    ("edgectl.controller.catalogue_check", ("catalogue",)),
    ("edgectl.lab.demo", ("demo",)),
    ("edgectl.lab.lab_cli", ("lab",)),
    (
        "edgectl.client.verbs",
        (
            "who",
            "quarantine",
            "exempt",
            "account",
            "offenders",
            "gateways",
            "audit",
            "proposals",
            "policies",
        ),
    ),
    ("edgectl.portal.cli", ("portal",)),
)


def _registrars_for(words: Sequence[str]) -> list[str]:
    """The module that registers the command in ``words``; every module when
    there is none to find (``--help``, a typo), so argparse lists them all."""
    command = next((word for word in words if not word.startswith("-")), None)
    for module, commands in REGISTRARS:
        if command in commands:
            return [module]
    return [module for module, _ in REGISTRARS]


def build_parser(modules: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgectl", description="Stop spam at its source, at the network edge."
    )
    parser.add_argument("--version", action="version", version=f"edgectl {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in modules or [name for name, _ in REGISTRARS]:
        importlib.import_module(module).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    modules = _registrars_for(words)
    if "edgectl.client.verbs" in modules:
        from edgectl.client.verbs import join_relative_times

        words = join_relative_times(words)
    args = build_parser(modules).parse_args(words)
    try:
        code: int = args.func(args)
    except CliError as error:
        print(f"edgectl {args.command}: {error}", file=sys.stderr)
        return error.code
    finally:
        if argv is None:
            # The process's own command line: it exits next.  The collections
            # the interpreter runs while it shuts down would walk every object
            # still alive (modules, what the command left) to free nothing
            # reference counting does not: 15-20 ms of an ``edgectl apply``
            # of 50k keys, measured.  (A caller passing ``argv`` goes on.)
            gc.freeze()
    return code


if __name__ == "__main__":
    sys.exit(main())
