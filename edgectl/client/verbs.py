"""The abuse desk's subcommands, registered into ``edgectl``.

Each verb is one REST call (two for ``account show``), printed as a table or,
with ``-o json``, as the API's own document, unchanged, for scripts.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

from edgectl.client import config, output, timespec
from edgectl.client.errors import ClientError, UsageError
from edgectl.client.transport import Api

Verb = Callable[[argparse.Namespace, Api, TextIO], None]

MODES = ("smtp", "walled-garden", "block")
STATES = ("active", "expired", "lifted", "ended", "all")


def _path(*parts: str) -> str:
    return "/".join(quote(part, safe="") for part in parts)


def _expiry(args: argparse.Namespace) -> dict[str, Any]:
    if args.duration is not None and args.expires is not None:
        raise UsageError("give --duration or --expires, not both")
    if args.duration is not None:
        return {"duration": timespec.duration(args.duration)}
    if args.expires is not None:
        return {"expires": timespec.instant(args.expires, "--expires")}
    return {}


def _json(args: argparse.Namespace) -> bool:
    return bool(args.output == "json")


def _listing(
    args: argparse.Namespace, found: Any, columns: list[output.Column], out: TextIO
) -> None:
    """What a list verb prints: the answer as JSON (-o json) or as a table."""
    if _json(args):
        output.emit_json(found, out)
    else:
        output.table(found, columns, out)


def _outcome(args: argparse.Namespace, answer: Any, out: TextIO, line: str) -> None:
    """What a verb that changes one thing prints: the answer as JSON or one line."""
    if _json(args):
        output.emit_json(answer, out)
    else:
        out.write(line)


# -- who -------------------------------------------------------------------------

HOLDER_COLUMNS: list[output.Column] = [
    ("ACCOUNT", lambda r: r["account"]),
    ("HELD", lambda r: (r.get("interval") or {}).get("address")),
    ("FROM", lambda r: (r.get("interval") or {}).get("started")),
    ("UNTIL", lambda r: (r.get("interval") or {}).get("ended")),
    ("SOURCE", lambda r: (r.get("interval") or {}).get("source")),
    ("NOW_IPV4", lambda r: (r.get("session") or {}).get("ipv4")),
    ("NOW_IPV6", lambda r: (r.get("session") or {}).get("ipv6")),
]


def who(args: argparse.Namespace, api: Api, out: TextIO) -> None:
    at = None if args.at is None else timespec.instant(args.at, "--at")
    found = api.call("GET", "/v1/accounts", params={"address": args.address, "at": at})
    _listing(args, found, HOLDER_COLUMNS, out)


# -- quarantines -------------------------------------------------------------------

QUARANTINE_COLUMNS: list[output.Column] = [
    ("ID", lambda r: r["id"]),
    ("ACCOUNT", lambda r: r["account"] or r["prefix"]),
    ("MODE", lambda r: r["mode"]),
    ("STATE", lambda r: r["state"]),
    ("TICKET", lambda r: r["ticket"]),
    ("ACTOR", lambda r: r["actor"]),
    ("CREATED", lambda r: r["created_at"]),
    ("EXPIRES", lambda r: r["expires_at"]),
    ("REASON", lambda r: r["reason"]),
]


def _read_accounts(path: str) -> list[str]:
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"--from-file {path}: {error}") from None
    # One account a line; blank lines and # comments are for the person who wrote it.
    accounts = [line.split("#", 1)[0].strip() for line in lines]
    accounts = [a for a in accounts if a]
    if not accounts:
        raise UsageError(f"--from-file {path}: no accounts in it")
    return accounts


def quarantine_add(args: argparse.Namespace, api: Api, out: TextIO) -> None:
    targets = [t for t in (args.account, args.address, args.prefix, args.from_file) if t]
    if len(targets) != 1:
        raise UsageError("give exactly one of ACCOUNT, --address, --prefix or --from-file")
    if args.at is not None and args.address is None:
        raise UsageError("--at is for --address: when the address was held")
    body: dict[str, Any] = {"mode": args.mode, "reason": args.reason, **_expiry(args)}
    if args.ticket is not None:
        body["ticket"] = args.ticket
    if args.from_file:
        body["accounts"] = _read_accounts(args.from_file)
        counts = api.call("POST", "/v1/quarantines/bulk", body=body)
        if _json(args):
            output.emit_json(counts, out)
        else:
            out.write(f"created {counts['created']}, updated {counts['updated']}\n")
        return
    if args.account:
        body["account"] = args.account
    elif args.prefix:
        body["prefix"] = args.prefix
    else:
        body["address"] = args.address
        if args.at is not None:
            body["at"] = timespec.instant(args.at, "--at")
    outcome = api.call("POST", "/v1/quarantines", body=body)
    if _json(args):
        output.emit_json(outcome, out)
        return
    hold = outcome["quarantine"]
    resolved = outcome.get("resolved")
    if resolved:
        out.write(
            f"{resolved['address']} at {resolved['at']} was held by {resolved['account']} "
            f"({resolved['held']}, {resolved['source']})\n"
        )
    out.write(f"{outcome['outcome']} quarantine {hold['id']}\n")
    output.table([hold], QUARANTINE_COLUMNS, out)


def quarantine_list(args: argparse.Namespace, api: Api, out: TextIO) -> None:
    params = {
        "state": args.state,
        "account": args.account,
        "ticket": args.ticket,
        "prefix": args.prefix,
        "mode": args.mode,
        "actor": args.actor,
        "limit": args.limit,
        "offset": args.offset,
    }
    found = api.call("GET", "/v1/quarantines", params=params)
    _listing(args, found, QUARANTINE_COLUMNS, out)


def _hold_pairs(hold: dict[str, Any]) -> list[tuple[str, Any]]:
    return list(hold.items())


def quarantine_show(args: argparse.Namespace, api: Api, out: TextIO) -> None:
    hold = api.call("GET", f"/v1/quarantines/{args.id}")
    if _json(args):
        output.emit_json(hold, out)
    else:
        output.pairs(_hold_pairs(hold), out)


def quarantine_lift(args: argparse.Namespace, api: Api, out: TextIO) -> None:
    hold = api.call("POST", f"/v1/quarantines/{args.id}/lift", body={"reason": args.reason})
    held = hold["account"] or hold["prefix"]
    _outcome(args, hold, out, f"lifted quarantine {hold['id']} ({held})\n")


# -- exemptions ----------------------------------------------------------------------

EXEMPTION_COLUMNS = output.columns(
    ("ID", "id"),
    ("ACCOUNT", "account"),
    ("STATE", "state"),
    ("TICKET", "ticket"),
    ("ACTOR", "actor"),
    ("CREATED", "created_at"),
    ("EXPIRES", "expires_at"),
    ("REASON", "reason"),
)


def exempt_add(args: argparse.Namespace, api: Api, out: TextIO) -> None:
    body = {"account": args.account, "ticket": args.ticket, "reason": args.reason}
    hold = api.call("POST", "/v1/exemptions", body={**body, **_expiry(args)})
    if _json(args):
        output.emit_json(hold, out)
    else:
        out.write(f"created exemption {hold['id']}\n")
        output.table([hold], EXEMPTION_COLUMNS, out)


def exempt_list(args: argparse.Namespace, api: Api, out: TextIO) -> None:
    params = {
        "state": args.state,
        "account": args.account,
        "ticket": args.ticket,
        "limit": args.limit,
        "offset": args.offset,
    }
    found = api.call("GET", "/v1/exemptions", params=params)
    _listing(args, found, EXEMPTION_COLUMNS, out)


def exempt_lift(args: argparse.Namespace, api: Api, out: TextIO) -> None:
    hold = api.call("POST", f"/v1/exemptions/{args.id}/lift", body={"reason": args.reason})
    _outcome(args, hold, out, f"lifted exemption {hold['id']} ({hold['account']})\n")


# -- account ---------------------------------------------------------------------------

SESSION_COLUMNS = output.columns(
    ("ADDRESS", "address"),
    ("FROM", "started"),
    ("UNTIL", "ended"),
    ("SOURCE", "source"),
    ("SESSION_ID", "session_id"),
)


def account_show(args: argparse.Namespace, api: Api, out: TextIO) -> None:
    history = api.call("GET", "/v1/accounts/" + _path(args.account) + "/history")
    if _json(args):
        output.emit_json(history, out)
        return
    session = history.get("session")
    out.write(f"account  {history['account']}\n")
    if session:
        out.write(
            f"session  ipv4 {output.cell(session['ipv4'])}  ipv6 "
            f"{output.cell(session['ipv6'])}  since {session['updated_at']}\n"
        )
    else:
        out.write("session  none now\n")
    for title, rows, columns in (
        ("quarantines", history["quarantines"], QUARANTINE_COLUMNS),
        ("exemptions", history["exemptions"], EXEMPTION_COLUMNS),
        ("sessions", history["sessions"], SESSION_COLUMNS),
    ):
        out.write(f"\n{title} ({len(rows)})\n")
        if rows:
            output.table(rows, columns, out)


# -- offenders, gateways, audit --------------------------------------------------------------

OFFENDER_COLUMNS = output.columns(
    ("KEY", "key"),
    ("KIND", "kind"),
    ("POLICY", "policy"),
    ("SHADOW", "shadow"),
    ("COUNT", "count"),
    ("LAST_SEEN", "last_seen"),
    ("GATEWAYS", "gateways"),
    ("ACCOUNT", "account"),
)


def offenders(args: argparse.Namespace, api: Api, out: TextIO) -> None:
    params = {"gateway": args.gateway, "kind": args.kind, "limit": args.limit}
    found = api.call("GET", "/v1/offenders", params=params)
    _listing(args, found, OFFENDER_COLUMNS, out)


def _repairs(row: dict[str, Any]) -> Any:
    detail = (row.get("status") or {}).get("detail") or {}
    return detail.get("drift_repairs")


GATEWAY_COLUMNS: list[output.Column] = [
    ("GATEWAY", lambda r: r["name"]),
    ("WANTED", lambda r: r["convergence"]["wanted_revision"]),
    ("APPLIED", lambda r: r["convergence"]["applied_revision"]),
    ("CONVERGED", lambda r: r["convergence"]["converged"]),
    ("LAG_S", lambda r: r["convergence"]["lag_seconds"]),
    ("LAST_SEEN", lambda r: r["convergence"]["last_seen"]),
    ("SEEN_S_AGO", lambda r: r["convergence"]["seconds_since_seen"]),
    ("DRIFT_REPAIRS", _repairs),
]


def gateways(args: argparse.Namespace, api: Api, out: TextIO) -> None:
    found = api.call("GET", "/v1/gateways")
    _listing(args, found, GATEWAY_COLUMNS, out)


AUDIT_COLUMNS: list[output.Column] = [
    ("ID", lambda r: r["id"]),
    ("AT", lambda r: r["at"]),
    ("ACTOR", lambda r: r["actor"]),
    ("ACTION", lambda r: r["action"]),
    ("OBJECT", lambda r: f"{r['object_type']}:{r['object_id']}"),
    ("REASON", lambda r: r["reason"]),
]


def audit(args: argparse.Namespace, api: Api, out: TextIO) -> None:
    object_type = object_id = None
    if args.object:
        object_type, _, object_id = args.object.partition(":")
        object_id = object_id or None
    params = {
        "since": None if args.since is None else timespec.instant(args.since, "--since"),
        "until": None if args.until is None else timespec.instant(args.until, "--until"),
        "actor": args.actor,
        "action": args.action,
        "object_type": object_type or None,
        "object_id": object_id,
        "after_id": args.after_id,
        "limit": args.limit,
    }
    found = api.call("GET", "/v1/audit", params=params)
    _listing(args, found, AUDIT_COLUMNS, out)


# -- proposals and policies --------------------------------------------------------------

PROPOSAL_STATES = ("pending", "approved", "rejected", "all")

PROPOSAL_COLUMNS = output.columns(
    ("ID", "id"),
    ("POLICY", "policy"),
    ("ACCOUNT", "account"),
    ("STRIKE", "strike"),
    ("MODE", "mode"),
    ("DURATION_S", "duration"),
    ("REVIEW", "review"),
    ("WHY", "why"),
    ("STATE", "state"),
    ("CREATED", "created_at"),
    ("DECIDED_BY", "decided_by"),
    ("QUARANTINE", "quarantine"),
)


def proposals_list(args: argparse.Namespace, api: Api, out: TextIO) -> None:
    params = {"state": args.state, "policy": args.policy, "limit": args.limit}
    found = api.call("GET", "/v1/proposals", params=params)
    _listing(args, found, PROPOSAL_COLUMNS, out)


def _decide(args: argparse.Namespace, api: Api, out: TextIO, approve: bool) -> None:
    ids = list(dict.fromkeys(args.ids))  # the API decides an id once; say so once too
    verb = "approve" if approve else "reject"
    body: dict[str, Any] = {"reason": args.reason}
    if approve and args.force:
        body["force"] = True
    if len(ids) == 1:
        decided = [api.call("POST", f"/v1/proposals/{ids[0]}/{verb}", body=body)]
        document: Any = decided[0]
    else:
        # One request, so the controller decides all of them or none: a
        # half-approved batch would leave the desk guessing which holds exist.
        body.update({"ids": ids, "decision": verb})
        decided = document = api.call("POST", "/v1/proposals/decide", body=body)
    if _json(args):
        output.emit_json(document, out)
        return
    noun = "proposal" if len(decided) == 1 else "proposals"
    out.write(f"{'approved' if approve else 'rejected'} {len(decided)} {noun}\n")
    output.table(decided, PROPOSAL_COLUMNS, out)


def proposals_approve(args: argparse.Namespace, api: Api, out: TextIO) -> None:
    _decide(args, api, out, approve=True)


def proposals_reject(args: argparse.Namespace, api: Api, out: TextIO) -> None:
    _decide(args, api, out, approve=False)


def _strike_text(strike: dict[str, Any]) -> str:
    if strike.get("source") == "offender":
        return f"offender {strike.get('kind')}>={strike.get('threshold')}"
    return f"report {strike.get('class')}"


POLICY_COLUMNS: list[output.Column] = [
    ("NAME", lambda r: r["name"]),
    ("MODE", lambda r: r["mode"]),
    ("STRIKES", lambda r: [_strike_text(s) for s in r["strikes"]]),
    ("STEPS", lambda r: len(r["steps"])),
    ("WINDOW_S", lambda r: r["window"]),
    ("ACTOR", lambda r: r["actor"]),
    ("UPDATED", lambda r: r["updated_at"]),
]

STEP_COLUMNS = output.columns(
    ("STRIKE", "strike"),
    ("MODE", "mode"),
    ("DURATION_S", "duration"),
    ("REVIEW", "review"),
)


def policies_list(args: argparse.Namespace, api: Api, out: TextIO) -> None:
    found = api.call("GET", "/v1/policies")
    _listing(args, found, POLICY_COLUMNS, out)


def policies_show(args: argparse.Namespace, api: Api, out: TextIO) -> None:
    policy = api.call("GET", "/v1/policies/" + _path(args.name))
    if _json(args):
        output.emit_json(policy, out)
        return
    output.pairs(
        [
            ("name", policy["name"]),
            ("mode", policy["mode"]),
            ("window_s", policy["window"]),
            ("strikes", [_strike_text(s) for s in policy["strikes"]]),
            ("actor", policy["actor"]),
            ("created", policy["created_at"]),
            ("updated", policy["updated_at"]),
        ],
        out,
    )
    out.write("\nsteps\n")
    output.table(policy["steps"], STEP_COLUMNS, out)


REPLAY_COLUMNS = output.columns(
    ("STRIKE", "strike"),
    ("MODE", "mode"),
    ("DURATION_S", "duration"),
    ("REVIEW", "review"),
    ("COUNT", "count"),
    ("ACCOUNTS", "account_count"),
    ("WHO", "accounts"),
)


def policies_replay(args: argparse.Namespace, api: Api, out: TextIO) -> None:
    body = {
        "since": timespec.instant(args.since, "--since"),
        "until": timespec.instant(args.until, "--until"),
    }
    result = api.call("POST", "/v1/policies/" + _path(args.name) + "/replay", body=body)
    if _json(args):
        output.emit_json(result, out)
        return
    outcomes = result["outcomes"]
    out.write(f"replay of {args.name} from {result['since']} until {result['until']}\n")
    out.write(
        f"events {result['events']}, strikes {result['strikes']} "
        f"on {result['accounts']} accounts, absorbed by a hold {result['absorbed']}\n"
    )
    out.write(
        f"enforced {outcomes.get('enforced', 0)}, braked {outcomes.get('braked', 0)}, "
        f"exempt {outcomes.get('exempt', 0)}\n\n"
    )
    shown = max((len(step["accounts"]) for step in result["steps"]), default=0)
    output.table(result["steps"], REPLAY_COLUMNS, out)
    if any(step["account_count"] > len(step["accounts"]) for step in result["steps"]):
        # The API lists the first accounts of a step only; -o json has the same list.
        out.write(f"(WHO shows at most {shown} accounts a step)\n")


# -- wiring -------------------------------------------------------------------------------------


def run(verb: Verb, args: argparse.Namespace) -> int:
    try:
        settings = config.resolve(args.controller, args.ca_file, args.client_config)
        with Api(settings) as api:
            verb(args, api, sys.stdout)
    except ClientError as error:
        print(f"edgectl: {error.message}", file=sys.stderr)
        return error.code
    return 0


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("controller")
    group.add_argument(
        "--controller",
        help="controller URL (default $EDGECTL_URL, the "
        "client config's url, or http://127.0.0.1:8470)",
    )
    group.add_argument("--ca-file", help="CA bundle to verify the controller's TLS certificate")
    group.add_argument(
        "--client-config",
        help="client config file (default "
        "$EDGECTL_CLIENT_CONFIG or ~/.config/edgectl/client.toml; mode 0600)",
    )
    group.add_argument(
        "-o",
        "--output",
        choices=("table", "json"),
        default="table",
        help="table for people (default) or the API's JSON for scripts",
    )
    return common


def _bind(parser: argparse.ArgumentParser, verb: Verb) -> None:
    parser.set_defaults(func=lambda args: run(verb, args))


def _expiry_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", help="how long: 90m, 24h, 7d (default: no expiry)")
    parser.add_argument("--expires", help="until when: RFC 3339 time")


def _hold_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state", choices=STATES, default="active")
    parser.add_argument("--account")
    parser.add_argument("--ticket")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--offset", type=int, default=0)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    common = _common()

    p = subparsers.add_parser("who", parents=[common], help="who held an address (now or --at)")
    p.add_argument("address", help="IP address or prefix, as in the abuse report")
    p.add_argument("--at", help="when: RFC 3339 or relative (-2h); default now")
    _bind(p, who)

    quarantine = subparsers.add_parser("quarantine", help="quarantine accounts (abuse role)")
    q = quarantine.add_subparsers(dest="action", required=True)
    p = q.add_parser("add", parents=[common], help="quarantine an account")
    p.add_argument("account", nargs="?", help="the account (or use --address / --from-file)")
    p.add_argument("--address", help="quarantine whoever held this address (with --at)")
    p.add_argument("--at", help="with --address: when (RFC 3339 or -2h)")
    p.add_argument("--prefix", help="unassigned address space instead of an account")
    p.add_argument("--from-file", help="one account a line: all quarantined, or none")
    p.add_argument("--mode", required=True, choices=MODES)
    p.add_argument("--reason", required=True)
    p.add_argument("--ticket")
    _expiry_options(p)
    _bind(p, quarantine_add)
    p = q.add_parser("list", parents=[common], help="list quarantines")
    _hold_filters(p)
    p.add_argument("--prefix")
    p.add_argument("--mode", choices=MODES)
    p.add_argument("--actor", help="who placed it, e.g. token:alice or policy:strikes")
    _bind(p, quarantine_list)
    p = q.add_parser("show", parents=[common], help="one quarantine")
    p.add_argument("id", type=int)
    _bind(p, quarantine_show)
    p = q.add_parser("lift", parents=[common], help="end a quarantine")
    p.add_argument("id", type=int)
    p.add_argument("--reason", required=True)
    _bind(p, quarantine_lift)

    exempt = subparsers.add_parser("exempt", help="OP25B exemptions (abuse role)")
    e = exempt.add_subparsers(dest="action", required=True)
    p = e.add_parser("add", parents=[common], help="exempt an account from OP25B")
    p.add_argument("account")
    p.add_argument("--ticket", required=True)
    p.add_argument("--reason", required=True)
    _expiry_options(p)
    _bind(p, exempt_add)
    p = e.add_parser("list", parents=[common], help="list exemptions")
    _hold_filters(p)
    _bind(p, exempt_list)
    p = e.add_parser("lift", parents=[common], help="end an exemption")
    p.add_argument("id", type=int)
    p.add_argument("--reason", required=True)
    _bind(p, exempt_lift)

    account = subparsers.add_parser("account", help="an account's session and history")
    a = account.add_subparsers(dest="action", required=True)
    p = a.add_parser("show", parents=[common], help="session, holds and session history")
    p.add_argument("account")
    _bind(p, account_show)

    p = subparsers.add_parser(
        "offenders", parents=[common], help="subscribers the gateways' block logs named"
    )
    p.add_argument("--gateway")
    p.add_argument("--kind", help="ratelimit, concurrency, destinationlimit, op25b, quarantine")
    p.add_argument("--limit", type=int, default=100)
    _bind(p, offenders)

    p = subparsers.add_parser(
        "gateways",
        parents=[common],
        help="revision wanted vs applied, lag and last report per gateway",
    )
    _bind(p, gateways)

    p = subparsers.add_parser("audit", parents=[common], help="the audit trail (oldest first)")
    p.add_argument("--since", help="RFC 3339 or relative (-2h)")
    p.add_argument("--until", help="RFC 3339 or relative")
    p.add_argument("--actor")
    p.add_argument("--action")
    p.add_argument("--object", help="TYPE or TYPE:ID, e.g. quarantine:12 or account:cust-42")
    p.add_argument("--after-id", type=int, help="page on: the last id seen")
    p.add_argument("--limit", type=int, default=100)
    _bind(p, audit)

    proposals = subparsers.add_parser(
        "proposals", help="holds an escalation policy asks an analyst to decide"
    )
    pr = proposals.add_subparsers(dest="action", required=True)
    p = pr.add_parser("list", parents=[common], help="proposals, oldest first")
    p.add_argument("--state", choices=PROPOSAL_STATES, default="pending")
    p.add_argument("--policy", help="only this policy's proposals")
    p.add_argument("--limit", type=int, default=100)
    _bind(p, proposals_list)
    p = pr.add_parser("approve", parents=[common], help="place the proposed holds")
    p.add_argument("ids", nargs="+", type=int, metavar="ID", help="several: all or none")
    p.add_argument("--reason", required=True)
    p.add_argument("--force", action="store_true", help="hold an exempt account anyway")
    _bind(p, proposals_approve)
    p = pr.add_parser(
        "reject", parents=[common], help="drop proposals; their strikes stop counting"
    )
    p.add_argument("ids", nargs="+", type=int, metavar="ID", help="several: all or none")
    p.add_argument("--reason", required=True)
    _bind(p, proposals_reject)

    policies = subparsers.add_parser("policies", help="escalation policies (read and replay)")
    po = policies.add_subparsers(dest="action", required=True)
    p = po.add_parser("list", parents=[common], help="all policies")
    _bind(p, policies_list)
    p = po.add_parser("show", parents=[common], help="one policy: its strikes and steps")
    p.add_argument("name")
    _bind(p, policies_show)
    p = po.add_parser(
        "replay", parents=[common], help="what a policy would have done over a past period"
    )
    p.add_argument("name")
    p.add_argument("--since", required=True, help="RFC 3339 or relative (-30d)")
    p.add_argument("--until", required=True, help="RFC 3339 or relative (-0s for now)")
    _bind(p, policies_replay)


_TIME_OPTIONS = frozenset({"--at", "--since", "--until", "--expires"})


def join_relative_times(argv: list[str]) -> list[str]:
    """``--at -2h`` -> ``--at=-2h``.

    argparse reads a value starting with "-" as the next option (only plain
    negative numbers are exempt), so the relative times this client promises
    would need ``--at=-2h``; joining them here lets people type what the help says.
    """
    joined: list[str] = []
    index = 0
    while index < len(argv):
        word = argv[index]
        following = argv[index + 1] if index + 1 < len(argv) else None
        if word in _TIME_OPTIONS and following is not None and timespec.is_relative(following):
            joined.append(f"{word}={following}")
            index += 2
            continue
        joined.append(word)
        index += 1
    return joined
