"""``netplugctl policy``: apply, list, show and delete network policies.

``apply`` validates the whole document against the networks the store knows
before it writes anything, and writes every policy in one transaction.
``list`` and ``show`` add each policy's packet counters (allowed, dropped)
summed over the live hosts whose agents report them (``ipam.enforcement``),
and how many hosts those are; "-" (null in JSON) when none does.
``status_lines`` is ``netplugctl status``'s part: the hosts that do not
enforce the store's policy revision.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import BinaryIO

from netplug.ctl.tables import render
from netplug.ipam import enforcement, networks, policies
from netplug.ipam.enforcement import Enforced
from netplug.ipam.schema import SchemaError
from netplug.ipam.store.base import Store
from netplug.names import ID_RULE, NETWORK_NAME, cli_type, is_id
from netplug.policy.model import MAX_DOCUMENT, Policy, PolicyError, parse, too_big
from netplug.policy.report import behind, total

NOT_REPORTED = "-"  # no live host reports the policy's counters
POLICY_NAME = cli_type(is_id, "policy name", ID_RULE)


def read_document(source: str, stdin: BinaryIO) -> bytes:
    """The document at ``source`` ("-": stdin). Raises PolicyError past the limit,
    having read at most one byte more than it: a huge input is never read whole."""
    if source == "-":
        data = stdin.read(MAX_DOCUMENT + 1)
        size = None
    else:
        with open(source, "rb") as f:
            data = f.read(MAX_DOCUMENT + 1)
            size = os.fstat(f.fileno()).st_size
    if len(data) > MAX_DOCUMENT:
        raise PolicyError([too_big(size)])
    return data


def cmd_apply(store: Store, args: argparse.Namespace) -> int:
    try:
        try:
            data = read_document(args.file, sys.stdin.buffer)
        except OSError as e:
            return _fail(f"policy apply: cannot read {args.file}: {e.strerror or e}")
        found = parse(data, networks.networks(store).keys())
        revision = policies.apply(store, found)
    except PolicyError as e:
        where = "stdin" if args.file == "-" else args.file
        for problem in e.errors:
            print(f"netplugctl: policy apply {where}: {problem}", file=sys.stderr)
        print("netplugctl: nothing was applied", file=sys.stderr)
        return 1
    rows = [{"policy": p.name, "network": p.network, "revision": revision} for p in found]
    render(rows, ["policy", "network", "revision"], as_json=args.json)
    return 0


def cmd_list(store: Store, args: argparse.Namespace) -> int:
    counted = counters(enforcement.read(store))
    rows = [
        {**_row(p), **counted(p.name)}
        for p in policies.read(store)
        if args.network in (None, p.network)
    ]
    columns = ["name", "network", "select", "ingress", "egress", "allowed", "dropped", "hosts"]
    render(rows if args.json else _text(rows), columns, as_json=args.json)
    return 0


def _row(p: Policy) -> dict:
    def rules(direction: tuple | None) -> str:
        return "untouched" if direction is None else f"{len(direction)} rule(s)"

    return {
        "name": p.name,
        "network": p.network,
        "select": "all" if p.select is None else " ".join(p.select),
        "ingress": rules(p.ingress),
        "egress": rules(p.egress),
    }


def counters(enforced: Enforced) -> Callable[[str], dict]:
    """A policy's name -> its counters summed over the live hosts that report
    them (``allowed``, ``dropped``: None when no host does) and how many do."""
    summed = total(r.counters for r in enforced.reports.values()).policies
    hosts = enforced.reports.values()

    def of(name: str) -> dict:
        counts = summed.get(name)
        return {
            "allowed": None if counts is None else counts.allowed,
            "dropped": None if counts is None else counts.dropped,
            "hosts": sum(name in r.counters.policies for r in hosts),
        }

    return of


def _text(rows: list[dict]) -> list[dict]:
    return [{k: NOT_REPORTED if v is None else v for k, v in row.items()} for row in rows]


def cmd_show(store: Store, args: argparse.Namespace) -> int:
    """The document and its counters: ``--json`` {"policy": DOCUMENT, "allowed",
    "dropped", "hosts"}; as text, the counters then the document."""
    try:
        found = policies.get(store, args.name)
    except SchemaError as e:
        return _fail(f"policy show: {e}")
    if found is None:
        return _fail(f"policy show: no policy {args.name}")
    counted = counters(enforcement.read(store))(found.name)
    if args.json:
        json.dump({"policy": found.to_json(), **counted}, sys.stdout)
    else:
        for key, value in _text([counted])[0].items():
            print(f"{key + ':':<9} {value}")
        json.dump(found.to_json(), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def status_lines(enforced: Enforced) -> tuple[dict, list[str]]:
    """``netplugctl status``'s part: the store's policy revision and the live hosts
    that do not enforce it (each with the revision it does and its agent's error),
    for JSON; and the lines that say so as text."""
    lagging = behind(
        {h: r.revision for h, r in enforced.reports.items()}, enforced.live, enforced.revision
    )
    rows, lines = [], []
    for host in lagging:
        report = enforced.reports.get(host)
        enforces = None if report is None else report.revision
        error = "" if report is None else report.error
        rows.append({"host": host, "enforces": enforces, "error": error})
        if report is None:
            state = "has not reported"
        elif enforces is None:
            state = "enforces no revision yet"
        else:
            state = f"enforces revision {enforces}"
        lines.append(f"host {host} {state}" + (f": {error}" if error else ""))
    lines += [f"unreadable report {key}: {why}" for key, why in sorted(enforced.bad.items())]
    enforcing = len(enforced.live) - len(lagging)
    summary = {
        "policyRevision": enforced.revision,
        "policyEnforcedBy": f"{enforcing} of {len(enforced.live)} live host(s)",
        "hostsBehind": rows,
    }
    return summary, lines


def cmd_delete(store: Store, args: argparse.Namespace) -> int:
    if not policies.delete(store, args.name):
        return _fail(f"policy delete: no policy {args.name}")
    print(f"deleted policy {args.name}", file=sys.stderr)
    if args.json:  # scripts read stdout
        render([{"policy": args.name, "deleted": True}], ["policy", "deleted"], as_json=True)
    return 0


def _fail(message: str) -> int:
    print(f"netplugctl: {message}", file=sys.stderr)
    return 1


COMMANDS = {"apply": cmd_apply, "list": cmd_list, "show": cmd_show, "delete": cmd_delete}


def cmd_policy(store: Store, args: argparse.Namespace) -> int:
    return COMMANDS[args.policy_command or "list"](store, args)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``policy`` command and its subcommands."""
    p = sub.add_parser("policy", help="network policies: apply, list (the default), show, delete")
    p.set_defaults(network=None)  # for `policy` alone, which lists (as `hosts` does)
    psub = p.add_subparsers(dest="policy_command", metavar="apply|list|show|delete")
    ap = psub.add_parser("apply", help="validate and store policies from FILE or - (stdin)")
    ap.add_argument("file", metavar="FILE|-")
    ls = psub.add_parser("list", help="policies and their counters")
    ls.add_argument("--network", type=NETWORK_NAME, help="only this network's")
    for verb, what in (("show", "one policy's document"), ("delete", "remove a policy")):
        psub.add_parser(verb, help=what).add_argument("name", metavar="NAME", type=POLICY_NAME)
