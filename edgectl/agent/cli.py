"""``edgectl render | plan | apply | show``: the dataplane by hand, one gateway."""

from __future__ import annotations

import argparse
import functools
import gc
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from edgectl.agent.apply import ApplyResult, Dataplane
from edgectl.agent.netns import NetnsError
from edgectl.agent.nft import NftError
from edgectl.agent.persist import PersistError, StateStore
from edgectl.agent.plan import Plan, make_plan
from edgectl.agent.render import render_full
from edgectl.agent.table import SPEC
from edgectl.cli_error import CliError
from edgectl.model.delta import diff
from edgectl.model.lint import exact_clear, lint
from edgectl.model.policy import DesiredState
from edgectl.model.serial import StateColumns
from edgectl.policyfile import PolicyFile, PolicyFileError, read_exact_columns, read_policy_file

DEFAULT_STATE_DIR = Path("/var/lib/edgectl")
EXIT_INVALID = 2
EXIT_KERNEL = 3


Command = Callable[[argparse.Namespace], int]


def _one_policy(command: Command) -> Command:
    """Run ``command`` with the cyclic collector paused.

    A command that reads one policy builds its objects once and exits: none
    of them form a cycle, yet the collector walks them all again and again
    while they are built (200k keys: ~0.2 s of a 1.4 s apply, measured).
    Reference counting frees them as before.
    """

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        enabled = gc.isenabled()
        gc.disable()
        try:
            return command(args)
        finally:
            if enabled:
                gc.enable()

    return run


def _policy_file(args: argparse.Namespace) -> PolicyFile:
    try:
        policy = read_policy_file(Path(args.file))
    except PolicyFileError as error:
        raise CliError(str(error)) from None
    problems = lint(policy.state)
    if problems:
        lines = "\n".join(f"  {problem}" for problem in problems)
        raise CliError(f"{args.file}: policy refused, nothing applied:\n{lines}")
    return policy


def _policy(args: argparse.Namespace) -> DesiredState:
    return _policy_file(args).state


def _state_store(args: argparse.Namespace) -> StateStore:
    base = Path(args.state_dir)
    return StateStore(base / f"netns-{args.netns}" if args.netns else base)


def _open(args: argparse.Namespace) -> Dataplane:
    """The kernel of ``--netns`` (or this namespace): one setns, one socket, one nft handle."""
    try:
        return Dataplane(args.netns)
    except (NetnsError, NftError, OSError) as error:
        raise CliError(f"cannot reach the kernel: {error}", EXIT_KERNEL) from error


@_one_policy
def cmd_render(args: argparse.Namespace) -> int:
    state = _policy(args)
    sys.stdout.write(str(render_full(state, datetime.now(UTC)).transaction))
    return 0


def _print_plan(plan: Plan) -> None:
    print(f"action: {plan.action}")
    for title, lines in (("drift", plan.drift), ("changes", plan.changes), ("checked", plan.notes)):
        for line in lines:
            print(f"  {title}: {line}")


def _plan(args: argparse.Namespace, state: DesiredState, dataplane: Dataplane) -> Plan:
    try:
        applied = _state_store(args).load()
    except PersistError as error:
        print(f"warning: {error}", file=sys.stderr)
        applied = None
    return make_plan(state, applied, dataplane)


@_one_policy
def cmd_plan(args: argparse.Namespace) -> int:
    try:
        state = _policy(args)
    except CliError as error:
        # With --detailed-exitcode, 2 means "changes pending"; a broken
        # policy must not look like one to automation.
        if args.detailed_exitcode:
            error.code = 1
        raise
    with _open(args) as dataplane:
        plan = _plan(args, state, dataplane)
    _print_plan(plan)
    return 2 if args.detailed_exitcode and not plan.in_sync else 0


@_one_policy
def cmd_apply(args: argparse.Namespace) -> int:
    exact = _exact_policy(args)
    # A policy is loaded (and refused) before the kernel is reached.
    policy = _policy_file(args) if exact is None else None
    with _open(args) as dataplane:
        if exact is not None:
            if _apply_exact(args, exact, dataplane):
                return 0
            columns, text = exact
            policy = PolicyFile(columns.state(), text)
        assert policy is not None
        return _apply(args, policy, dataplane)


def _exact_policy(args: argparse.Namespace) -> tuple[StateColumns, str] | None:
    """The policy as key columns and its JSON text, when it is a JSON file of
    exact keys that every check and lint pass; None otherwise (then
    the ordinary path loads it again and names whatever is wrong)."""
    try:
        loaded = read_exact_columns(Path(args.file))
    except PolicyFileError:
        return None
    if loaded is None:
        return None
    columns, _ = loaded
    if not exact_clear(columns):
        return None
    return loaded


def _apply_exact(
    args: argparse.Namespace, exact: tuple[StateColumns, str], dataplane: Dataplane
) -> bool:
    """``_apply`` of a policy of exact keys onto no table: the kernel written from
    the columns and the file's text saved, no model built.  False, having
    done nothing, when our table is there: the model is applied the
    ordinary way then."""
    columns, text = exact
    if dataplane.table_exists():
        return False
    try:
        # With no table there, the plan reads only the record of the last apply.
        plan = _plan(args, columns.structure, dataplane)
        # None: our table appeared since (sync_columns looks for it itself).
        result = dataplane.sync_columns(columns, cut=True)
        if result is None:
            return False
        # The state saved is the file's text; the header takes its revision.
        _state_store(args).save(columns.structure, dataplane.generation(), state_json=text)
    except NftError as error:
        raise CliError(str(error), EXIT_KERNEL) from error
    _report(plan, result)
    return True


def _apply(args: argparse.Namespace, policy: PolicyFile, dataplane: Dataplane) -> int:
    state = policy.state
    store = _state_store(args)
    try:
        plan = _plan(args, state, dataplane)
        if args.full or plan.action == "full":
            result = dataplane.full_sync(state)
        elif plan.action == "delta":
            applied = store.load()
            assert applied is not None  # a delta plan needs the record
            result = dataplane.apply_delta(applied.state, diff(applied.state, state))
        else:
            print(f"in sync at revision {state.revision}: nothing to do")
            return 0
        store.save(state, dataplane.generation(), state_json=policy.json_text)
    except NftError as error:
        raise CliError(str(error), EXIT_KERNEL) from error
    _report(plan, result)
    return 0


def _report(plan: Plan, result: ApplyResult) -> None:
    for line in plan.drift:
        print(f"repaired: {line}")
    print(
        f"applied revision {result.revision}: {result.kind} sync in "
        f"{result.seconds * 1000:.1f} ms ({result.script_bytes} bytes to the kernel)"
    )


def cmd_show(args: argparse.Namespace) -> int:
    with _open(args) as dataplane:
        layout = dataplane.read_table()
    if layout is None:
        print(f"table {SPEC}: absent")
        return 1
    try:
        applied = _state_store(args).load()
    except PersistError as error:
        applied = None
        print(f"warning: {error}", file=sys.stderr)
    report = {
        "generation": layout.generation,
        "applied_revision": None if applied is None else applied.state.revision,
        "applied_generation": None if applied is None else applied.generation,
        "chains": {name: len(chain.rules) for name, chain in sorted(layout.chains.items())},
        "sets": sorted(layout.sets),
        "counters": {
            name: {"packets": packets, "bytes": octets}
            for name, (packets, octets) in sorted(layout.counters.items())
        },
    }
    if applied is not None:
        report["quarantines"] = len(applied.state.quarantines)
        report["exemptions"] = len(applied.state.exemptions)
    print(json.dumps(report, indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def common(parser: argparse.ArgumentParser, policy: bool = True, kernel: bool = True) -> None:
        if policy:
            parser.add_argument("-f", "--file", required=True, help="policy file (TOML or JSON)")
        if kernel:
            parser.add_argument("--netns", help="act inside this network namespace")
            parser.add_argument(
                "--state-dir",
                default=str(DEFAULT_STATE_DIR),
                help="where the last applied state is kept (default %(default)s)",
            )

    render = subparsers.add_parser("render", help="print the nft script for a policy")
    common(render, kernel=False)
    render.set_defaults(func=cmd_render)

    plan = subparsers.add_parser("plan", help="what apply would change on this host")
    common(plan)
    plan.add_argument(
        "--detailed-exitcode", action="store_true", help="exit 2 when the host is not in sync"
    )
    plan.set_defaults(func=cmd_plan)

    apply = subparsers.add_parser("apply", help="make the kernel enforce a policy")
    common(apply)
    apply.add_argument("--full", action="store_true", help="full sync even if a delta would do")
    apply.set_defaults(func=cmd_apply)

    show = subparsers.add_parser("show", help="live table state and counters")
    common(show, policy=False)
    show.set_defaults(func=cmd_show)
