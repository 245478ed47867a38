"""``edgectl portal run --config FILE`` and ``edgectl portal lint [DIR]``."""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path
from typing import Any

from edgectl.agent.netns import NetnsError, inside
from edgectl.portal import config as portal_config
from edgectl.portal.pages import SHIPPED, Pages, TemplateRefused, lint_dir


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("portal", help="the notice portal for walled-garden subscribers")
    actions = parser.add_subparsers(dest="action", required=True)
    run = actions.add_parser("run", help="serve the notice portal")
    run.add_argument("--config", type=Path, required=True, help="TOML file with a [portal] table")
    run.set_defaults(func=_run)
    lint = actions.add_parser("lint", help="refuse templates that ask for a password")
    lint.add_argument("directory", type=Path, nargs="?", default=SHIPPED)
    lint.set_defaults(func=_lint)


def _lint(args: argparse.Namespace) -> int:
    if not args.directory.is_dir():
        print(f"edgectl portal lint: {args.directory} is not a directory", file=sys.stderr)
        return 2
    problems = lint_dir(args.directory)
    for name, why in problems.items():
        print(f"{args.directory / name}: {'; '.join(why)}", file=sys.stderr)
    return 2 if problems else 0


def _run(args: argparse.Namespace) -> int:
    from edgectl.portal.app import create_app
    from edgectl.portal.client import Controller
    from edgectl.portal.server import serve

    try:
        config = portal_config.load(args.config)
        pages = Pages(config.templates_dir, config.categories, config.support)
    except (portal_config.ConfigError, TemplateRefused) as error:
        print(f"edgectl portal: {error}", file=sys.stderr)
        return 2
    try:
        listener = _listen(config)
    except (OSError, NetnsError) as error:
        print(
            f"edgectl portal: cannot listen on {config.host}:{config.port}: {error}",
            file=sys.stderr,
        )
        return 2
    serve(create_app(config, pages, Controller(config)), listener)
    return 0


def _listen(config: portal_config.PortalConfig) -> socket.socket:
    """The listening socket, opened in ``listen_netns`` when set.

    A socket stays in the namespace it was created in, so the portal can
    face subscribers in one namespace and reach the controller from its own.
    """
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    with inside(config.listen_netns):
        listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if config.host == "::":
        # Both families on one socket (IPv4 peers arrive as ::ffff:a.b.c.d,
        # which the app unwraps), whatever the system's bindv6only says.
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    listener.bind((config.host, config.port))
    listener.listen(1024)
    return listener
