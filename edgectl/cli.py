"""The ``edgectl`` command: dataplane subcommands, and the controller's."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from edgectl import __version__
from edgectl.agent import cli as agent_cli
from edgectl.agent.cli import CliError
from edgectl.agent.daemon import cli as daemon_cli
from edgectl.client import verbs as client_verbs
from edgectl.controller import catalogue_check
from edgectl.controller import cli as controller_cli
from edgectl.lab import demo, lab_cli
from edgectl.portal import cli as portal_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgectl", description="Stop spam at its source, at the network edge."
    )
    parser.add_argument("--version", action="version", version=f"edgectl {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    agent_cli.register(subparsers)
    daemon_cli.register(subparsers)
    controller_cli.register(subparsers)
    catalogue_check.register(subparsers)
    demo.register(subparsers)
    lab_cli.register(subparsers)
    client_verbs.register(subparsers)
    portal_cli.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(client_verbs.join_relative_times(words))
    try:
        code: int = args.func(args)
    except CliError as error:
        print(f"edgectl {args.command}: {error}", file=sys.stderr)
        return error.code
    return code


if __name__ == "__main__":
    sys.exit(main())
