"""``edgectl lab up | down | status | probe``: the whole system in namespaces (root).

``register(subparsers)`` adds the ``lab`` command to the main parser; each
action sets ``func(args) -> int``.  Exit codes: 0 fine, 1 a probe that did
not connect (or an unhealthy ``status``), 2 refused or failed.

``python -m edgectl.lab.lab_cli ACTION ...`` runs the same actions without
the main CLI.  What ``up`` prints is runnable as printed: its commands name
this very program (``edgectl lab`` when that is the one on PATH).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from collections.abc import Sequence

from edgectl.lab import fleet
from edgectl.lab.probe import Outcome, connect

EXIT_NOT_CONNECTED = 1
EXIT_FAILED = 2

MX4 = "203.0.113.25"
MX6 = "2001:db8:ffff::25"
RELAY4 = "198.51.100.25"
QUARANTINED = "cust-1002"
GARDENED = "cust-1001"
GARDENED_IPV4 = "100.64.0.10"
GARDENED_IPV6 = "2001:db8:1000:100::10"  # in cust-1001's /56


def invocation() -> str:
    """How to run this program again from any directory, as a shell word list."""
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "edgectl":
        mine = os.path.realpath(argv0)
        on_path = shutil.which("edgectl")
        if on_path is not None and os.path.realpath(on_path) == mine:
            return "edgectl lab"
        return f"{shlex.quote(os.path.abspath(argv0))} lab"
    return f"{shlex.quote(sys.executable)} -m edgectl.lab.lab_cli"


def _edgectl(prog: str) -> str:
    """The main ``edgectl`` command, from how this lab command is run."""
    if prog.endswith(" lab"):
        return prog.removesuffix(" lab")
    return f"{shlex.quote(sys.executable)} -m edgectl.cli"


def _lab_name(text: str) -> str:
    try:
        return fleet.check_name(text)
    except fleet.LabError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _named(args: argparse.Namespace) -> str:
    return "" if args.name == fleet.DEFAULT_NAME else f" --name {args.name}"


def curl(result: fleet.Up, method: str, path: str, body: str | None = None) -> str:
    """The curl command for the lab controller, runnable from the root namespace as printed."""
    words = [
        "ip",
        "netns",
        "exec",
        result.state.ctl_ns,
        "curl",
        "-sS",
        "-H",
        f"Authorization: Bearer {result.token}",
        "-H",
        "Content-Type: application/json",
        "-X",
        method,
        f"{fleet.CONTROLLER_LOCAL_URL}{path}",
    ]
    if body is not None:
        words += ["-d", body]
    return shlex.join(words)


# What the BNG says about cust-1001 every few minutes while its session lasts.
INTERIM = {
    "Acct-Status-Type": "Interim-Update",
    "Acct-Session-Id": "lab-cust-1001",
    "User-Name": "cust-1001",
    "Framed-IP-Address": fleet.ACCOUNTS["cust-1001"]["ipv4"],
    "Delegated-IPv6-Prefix": fleet.ACCOUNTS["cust-1001"]["ipv6"],
}


def radclient(state: fleet.LabState, attributes: dict[str, str]) -> str:
    """One Accounting-Request from the lab's BNG with radclient, runnable as printed."""
    request = "".join(f"{name} = {value}\\n" for name, value in attributes.items())
    server = f"{state.radius_server}:{fleet.RADIUS_PORT}"
    send = ["ip", "netns", "exec", state.bng_ns, "radclient", "-x", "-r", "3", "-t", "2"]
    send += ["-S", str(state.radius_secret_file), server, "acct"]
    return f"printf {shlex.quote(request)} | {shlex.join(send)}"


def instructions(result: fleet.Up, prog: str, named: str) -> list[str]:
    """What ``up`` prints after the lab is up: every command line starts with ``    $ ``."""
    state = result.state

    def probe(gateway: str, host: str, dst: str, port: int, src: str | None = None) -> str:
        src_part = f" --src {src}" if src is not None else ""
        return f"    $ {prog} probe{named} {gateway}/{host} {dst} {port}{src_part}"

    a, b = fleet.GATEWAYS
    quarantine = (
        '{"account": "cust-1002", "mode": "smtp", "reason": "spam run", '
        '"ticket": "ABUSE-77", "duration": 86400}'
    )
    lift = '{"reason": "customer cleaned the machine"}'
    garden = (
        f'{{"account": "{GARDENED}", "mode": "walled-garden", "reason": "bot C2 traffic", '
        '"category": "botnet", "ticket": "ABUSE-78"}'
    )
    portal = state.topology(a).hosts["portal"].ipv4
    web = f"ip netns exec {state.host_ns(a, 'dyn4')} curl -s --interface {GARDENED_IPV4}"
    web6 = f"ip netns exec {state.host_ns(a, 'dyn6')} curl -s --interface {GARDENED_IPV6}"
    code = f"code=$({web} http://{MX4}/ | sed -n 's/.*class=\"code\">\\([A-Z0-9]*\\)<.*/\\1/p')"
    release = (
        f'{code}; {web} -H "Accept-Language: en" -d "hold=2&code=$code&release=1" '
        f"http://{MX4}/.edgectl/acknowledge"
    )
    sessions = ", ".join(f"{acct} {' + '.join(s.values())}" for acct, s in fleet.ACCOUNTS.items())
    revisions = ", ".join(f"{gw} r{rev}" for gw, rev in result.revisions.items())
    return [
        f"edgectl lab {state.name!r} is up: both agents applied their gateway's revision "
        f"({revisions}).",
        f"  state dir   {state.directory} (logs: *.log, pids: *.pid)",
        f"  controller  {fleet.CONTROLLER_LOCAL_URL} inside namespace {state.ctl_ns}; "
        f"{a} reaches it at {state.mgmt_url(a)}, {b} at {state.mgmt_url(b)}",
        f"  token       {result.token}  (netops; also in {state.token_file})",
        f"  console     {fleet.CONTROLLER_LOCAL_URL}/console inside namespace {state.ctl_ns}; "
        f"sign in with {result.abuse_token}",
        f"              (abuse role; also in {state.abuse_token_file}); from a desktop session "
        "(root, so without Chromium's sandbox: a lab only):",
        f"              ip netns exec {state.ctl_ns} chromium --no-sandbox "
        f"--user-data-dir=$(mktemp -d) {fleet.CONTROLLER_LOCAL_URL}/console",
        f"  abuse CLI   ip netns exec {state.ctl_ns} env EDGECTL_TOKEN=$(cat "
        f"{state.abuse_token_file}) {_edgectl(prog)} who 100.64.0.11",
        f"  gateways    {a}: namespaces {state.prefixes[a]}-*, {b}: {state.prefixes[b]}-* "
        "(same pools on both)",
        f"  accounts    {sessions}; {fleet.EXEMPT_ACCOUNT} is exempt from OP25B",
        f"  sessions    sent as RADIUS Acct-Starts by the lab's BNG (namespace {state.bng_ns}) "
        f"to {state.radius_server}:{fleet.RADIUS_PORT}, secret in {state.radius_secret_file}",
        "",
        "Try it (each probe is one real TCP connect from a lab host; it prints CONNECTED,",
        "RESET, UNREACHABLE or TIMEOUT):",
        "",
        f"1. {QUARANTINED} (100.64.0.11, dynamic pool) submits mail on port 587 "
        f"through {a} and {b}: CONNECTED",
        probe(a, "dyn4", MX4, 587, "100.64.0.11"),
        probe(b, "dyn4", MX4, 587, "100.64.0.11"),
        "",
        f"2. An abuse analyst quarantines {QUARANTINED} (smtp: mail ports refused); "
        'the answer says "outcome": "created" and the quarantine\'s "id" (1 in a fresh lab):',
        f"    $ {curl(result, 'POST', '/v1/quarantines', quarantine)}",
        "",
        "3. The same connection is now refused on both gateways: RESET",
        probe(a, "dyn4", MX4, 587, "100.64.0.11"),
        probe(b, "dyn4", MX4, 587, "100.64.0.11"),
        "",
        "4. Lift quarantine 1; the connection goes through again: CONNECTED",
        f"    $ {curl(result, 'POST', '/v1/quarantines/1/lift', lift)}",
        probe(a, "dyn4", MX4, 587, "100.64.0.11"),
        "",
        "5. OP25B: port 25 from a dynamic pool straight to an outside MX: RESET",
        probe(a, "dyn4", MX4, 25, "100.64.0.10"),
        probe(b, "dyn6", MX6, 25, "2001:db8:1000:100::10"),
        "   ... but through the ISP relay, from the static pool, or for the exempt "
        f"{fleet.EXEMPT_ACCOUNT}: CONNECTED",
        probe(a, "dyn4", RELAY4, 25, "100.64.0.10"),
        probe(a, "static4", MX4, 25),
        probe(a, "dyn4", MX4, 25, "100.64.0.12"),
        "",
        "6. Abuse staff ask who hit a block rule recently: each agent reads its gateway's",
        "   block log and reports within seconds, so this lists 100.64.0.11 (quarantine smtp,",
        "   both gateways) and cust-1001's 100.64.0.10 and 2001:db8:1000:100::/56 (OP25B):",
        f"    $ {curl(result, 'GET', '/v1/offenders')}",
        "",
        "7. The BNG's accounting keeps the bindings current: an Interim-Update for",
        "   cust-1001's session, sent with FreeRADIUS's radclient from the BNG namespace,",
        "   is answered once the controller has stored it (Received Accounting-Response):",
        f"    $ {radclient(state, INTERIM)}",
        "",
        f"8. The notice portal: an analyst puts {GARDENED} in the walled garden (DNS and the",
        "   notice portal only; the subscriber may release it once cleaned up); id 2:",
        f"    $ {curl(result, 'POST', '/v1/quarantines', garden)}",
        f"   Any plain-HTTP page {GARDENED} opens is now the notice (the gateway DNATs it to",
        "   the portal): account, reason category, ticket, and a one-time code:",
        f"    $ {web} -H 'Accept-Language: en' -H 'Host: example.org' http://{MX4}/",
        f"   The same over IPv6, from {GARDENED}'s /56:",
        f"    $ {web6} -H 'Accept-Language: en' -H 'Host: example.org' http://[{MX6}]/",
        "   (HTTPS is refused, not redirected: a TLS connection can only be answered by the",
        "   host it was meant for.)  The RFC 8908 captive-portal API says so too:",
        f"    $ {web} http://{portal}:{fleet.PORTAL_PORT}/.edgectl/captive",
        "   Self-release: the code from the page, with release=1 (the page's form does this):",
        f"    $ {release}",
        f"   Released on both gateways within the usual propagation: {GARDENED} is not",
        '   captive any more ({"captive":false}):',
        f"    $ {web} http://{portal}:{fleet.PORTAL_PORT}/.edgectl/captive",
        "",
        "Look around, then tear it all down (processes, namespaces, files):",
        f"    $ {curl(result, 'GET', '/v1/gateways')}",
        f"    $ ip netns exec {state.gateway_ns(a)} nft list table inet edgectl",
        f"    $ {prog} status{named}",
        f"    $ {prog} down{named}",
    ]


def cmd_up(args: argparse.Namespace) -> int:
    def log(message: str) -> None:
        print(f"lab: {message}", file=sys.stderr, flush=True)

    try:
        result = fleet.up(args.name, log=log)
    except (fleet.LabError, OSError) as error:
        print(f"edgectl lab up: {error}", file=sys.stderr)
        return EXIT_FAILED
    for line in instructions(result, invocation(), _named(args)):
        print(line)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    try:
        done = fleet.down(args.name)
    except (fleet.LabError, OSError) as error:
        print(f"edgectl lab down: {error}", file=sys.stderr)
        return EXIT_FAILED
    for line in done:
        print(line)
    print(f"lab {args.name!r} is down")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    try:
        ok, lines = fleet.status(args.name)
    except (fleet.LabError, OSError) as error:
        print(f"edgectl lab status: {error}", file=sys.stderr)
        return EXIT_FAILED
    for line in lines:
        print(line)
    return 0 if ok else EXIT_NOT_CONNECTED


def cmd_probe(args: argparse.Namespace) -> int:
    try:
        ns = fleet.resolve_namespace(args.name, args.source)
        outcome = connect(ns, args.dst, args.port, src=args.src, timeout=args.timeout)
    except (fleet.LabError, OSError, ValueError) as error:
        print(f"edgectl lab probe: {error}", file=sys.stderr)
        return EXIT_FAILED
    print(outcome.name)
    return 0 if outcome is Outcome.CONNECTED else EXIT_NOT_CONNECTED


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lab = subparsers.add_parser(
        "lab", help="a controller and two gateway agents in network namespaces (root)"
    )
    actions = lab.add_subparsers(dest="action", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--name",
        default=fleet.DEFAULT_NAME,
        type=_lab_name,
        help=f"lab instance (default {fleet.DEFAULT_NAME}); state in /run/edgectl-lab/NAME",
    )
    up = actions.add_parser(
        "up", parents=[common], help="build the lab, start its processes, print what to try"
    )
    up.set_defaults(func=cmd_up)
    down = actions.add_parser(
        "down",
        parents=[common],
        help="stop the processes, delete every namespace and file (idempotent)",
    )
    down.set_defaults(func=cmd_down)
    status = actions.add_parser(
        "status", parents=[common], help="processes, namespaces, revisions applied"
    )
    status.set_defaults(func=cmd_status)
    probe = actions.add_parser(
        "probe",
        parents=[common],
        help="one TCP connect from a lab host: CONNECTED, RESET, UNREACHABLE or TIMEOUT",
    )
    probe.add_argument("source", metavar="FROM", help="GATEWAY/HOST, e.g. gw-a/dyn4")
    probe.add_argument("dst", metavar="DST", help="destination address")
    probe.add_argument("port", metavar="PORT", type=int, help="destination TCP port")
    probe.add_argument("--src", default=None, help="source address to bind (one of FROM's)")
    probe.add_argument("--timeout", type=float, default=2.0, help="seconds (default 2)")
    probe.set_defaults(func=cmd_probe)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgectl.lab.lab_cli")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["lab", *(sys.argv[1:] if argv is None else argv)])
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
