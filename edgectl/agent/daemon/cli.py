"""``edgectl agent run | restore | decommission | check-config --config FILE``.

``register(subparsers)`` adds the ``agent`` command to the main parser; each
action sets ``func(args) -> int``.  Exit codes: 0 fine, 2 bad config (or
refused), 3 kernel trouble.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from edgectl.agent.daemon.config import AgentConfig, ConfigError, load
from edgectl.agent.daemon.lock import Locked, StateLock
from edgectl.agent.netns import NetnsError
from edgectl.agent.nft import NftError

EXIT_INVALID = 2
EXIT_KERNEL = 3


def _config(args: argparse.Namespace) -> AgentConfig | None:
    try:
        return load(Path(args.config))
    except ConfigError as error:
        print(f"edgectl agent: {args.config}: {error}", file=sys.stderr)
        return None


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # httpx logs every request at INFO: one line per long-poll is noise.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _config(args)
    if config is None:
        return EXIT_INVALID
    print(f"{args.config}: ok (gateway {config.gateway}, controller {', '.join(config.urls)})")
    return 0


def _under_lock(config: AgentConfig, work: Callable[[], int], busy_hint: str = "") -> int:
    """Run ``work`` holding the state directory's lock, mapping failures to exit codes."""
    try:
        with StateLock(config.state_dir):
            return work()
    except Locked as error:
        print(f"edgectl agent: {error}{busy_hint}", file=sys.stderr)
        return EXIT_INVALID
    except (NftError, NetnsError, OSError) as error:
        print(f"edgectl agent: cannot reach the kernel: {error}", file=sys.stderr)
        return EXIT_KERNEL


def cmd_run(args: argparse.Namespace) -> int:
    from edgectl.agent.daemon.run import install_signal_handlers, run

    config = _config(args)
    if config is None:
        return EXIT_INVALID
    _logging(args.verbose)
    stop = threading.Event()
    install_signal_handlers(stop)
    return _under_lock(config, lambda: run(config, stop))


def cmd_restore(args: argparse.Namespace) -> int:
    from edgectl.agent.daemon.run import restore_only

    config = _config(args)
    if config is None:
        return EXIT_INVALID
    _logging(verbose=False)
    # Nothing to restore (a new gateway, or a refused file, logged above) is
    # exit 1: visible to the operator, and `ExecStart=-` lets boot go on.
    return _under_lock(config, lambda: 0 if restore_only(config) else 1)


def cmd_decommission(args: argparse.Namespace) -> int:
    from edgectl.agent.daemon.decommission import decommission

    config = _config(args)
    if config is None:
        return EXIT_INVALID

    def work() -> int:
        for line in decommission(config) or ["nothing to remove"]:
            print(line)
        return 0

    # Under the lock: a running agent would put the table straight back.
    return _under_lock(config, work, busy_hint="; stop it first")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    agent = subparsers.add_parser("agent", help="the gateway agent (keeps the table in sync)")
    actions = agent.add_subparsers(dest="action", required=True)
    for name, func, help_text in (
        ("run", cmd_run, "run the agent until SIGTERM (the table stays in force after)"),
        ("restore", cmd_restore, "apply the last-known-good state and exit (before network)"),
        ("decommission", cmd_decommission, "remove the table and the persisted state"),
        ("check-config", cmd_check_config, "validate a config file (for Ansible validate:)"),
    ):
        parser = actions.add_parser(name, help=help_text)
        parser.add_argument("--config", required=True, help="agent config file (TOML)")
        if name == "run":
            parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
        parser.set_defaults(func=func)
