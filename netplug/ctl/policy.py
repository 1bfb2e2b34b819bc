"""``netplugctl policy``: apply, list, show and delete network policies.

``apply`` validates the whole document against the networks the store knows
before it writes anything, and writes every policy in one transaction. The
counters that ``list`` shows will come from the agents, which enforce the
policies but do not report counters yet: they show as "-".
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import BinaryIO

from netplug.ctl.tables import render
from netplug.ipam import networks, policies
from netplug.ipam.schema import SchemaError
from netplug.ipam.store.base import Store
from netplug.names import ID_RULE, NETWORK_NAME, cli_type, is_id
from netplug.policy.model import MAX_DOCUMENT, Policy, PolicyError, parse, too_big

NOT_REPORTED = "-"  # no agent reports counters yet
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
    rows = [_row(p) for p in policies.read(store) if args.network in (None, p.network)]
    columns = ["name", "network", "select", "ingress", "egress", "allowed", "dropped"]
    render(rows, columns, as_json=args.json)
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
        "allowed": NOT_REPORTED,
        "dropped": NOT_REPORTED,
    }


def cmd_show(store: Store, args: argparse.Namespace) -> int:
    try:
        found = policies.get(store, args.name)
    except SchemaError as e:
        return _fail(f"policy show: {e}")
    if found is None:
        return _fail(f"policy show: no policy {args.name}")
    json.dump(found.to_json(), sys.stdout, indent=None if args.json else 2)
    sys.stdout.write("\n")
    return 0


def cmd_delete(store: Store, args: argparse.Namespace) -> int:
    if not policies.delete(store, args.name):
        return _fail(f"policy delete: no policy {args.name}")
    print(f"deleted policy {args.name}", file=sys.stderr)
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
