"""netplugctl: look at and repair netplug's state.

Reads the store directly (any host can run it); ``gc``, ``recover`` and
``install`` act on the host it runs on. Tables for people, ``--json`` for scripts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from netplug.cni import agent_client as client
from netplug.cni.errors import CNIError
from netplug.ctl import install, policy, recover
from netplug.ctl.tables import render
from netplug.dns.records import decode_registration
from netplug.ipam import enforcement, hosts, inventory
from netplug.ipam.allocations import IPAM, Attachment
from netplug.ipam.schema import Names
from netplug.ipam.store.base import Store, StoreError
from netplug.ipam.store.url import DEFAULT_STORE_URL, open_store, parse_store_url
from netplug.names import HOST_NAME, NETWORK_NAME

# The status row's fields in their order (a store that does not answer: its error
# in place of its figures).
STATUS_ROW = (
    "store",
    "storeError",
    "revision",
    "host",
    "agent",
    "networks",
    "blocks",
    "hostBlocks",
    "allocations",
)


def cmd_status(store: Store, args: argparse.Namespace) -> int:
    agent, health = agent_status()
    try:
        row, enforced, behind = _store_status(store, args.host_name)
    except StoreError as e:
        # An outage is when the agent's word matters most: it is shown anyway.
        print(f"netplugctl: store {store.url}: {e}", file=sys.stderr)
        row, enforced, behind = {"store": store.url, "storeError": str(e)}, {}, []
    known = {**row, "host": args.host_name, "agent": agent}
    row = {key: known[key] for key in STATUS_ROW if key in known}
    if args.json:
        render([{**row, **enforced, "agentHealth": health}], [*row, "agentHealth"], as_json=True)
        return 1 if "storeError" in row else 0
    if enforced:
        row["policies"] = f"revision {enforced['policyRevision']}, enforced by " + str(
            enforced["policyEnforcedBy"]
        )
    for key, value in row.items():
        print(f"{key + ':':<13} {value}")
    agent_lines = [
        *store_refusal(health),
        *failing_loops(health),
        *enforcement_failing(health),
        *carried(health),
    ]
    for line in [*agent_lines, *behind, *bad_records(health)]:
        print(f"{'':<13} {line}")
    return 1 if "storeError" in row else 0


def _store_status(store: Store, host: str) -> tuple[dict, dict, list[str]]:
    """The store's side of ``status``: its row, the policy revision and who
    enforces it, and the lines of the hosts behind it."""
    blocks = inventory.blocks(store)
    attachments = inventory.attachments(store)
    enforced, behind = policy.status_lines(enforcement.read(store))
    row = {
        "store": store.url,
        "revision": store.status(),
        "networks": len({b.network for b in blocks}),
        "blocks": len(blocks),
        "hostBlocks": sum(1 for b in blocks if b.host == host),
        "allocations": len(attachments),
    }
    return row, enforced, behind


def agent_status(socket_name: str = client.SOCKET_NAME) -> tuple[str, dict | None]:
    """("running" | "degraded" | "not running" | why it did not answer, its health
    report): asked over @netplugd, so it works without the agent's HTTP API."""
    if os.geteuid() != 0:  # the agent hangs up on anyone else
        return "unknown (only root may ask netplugd)", None
    try:
        reply = client.query(client.HEALTH, 2.0, socket_name)
    except client.AgentError as e:
        return f"not answering ({e})", None
    if reply is None:
        return "not running", None
    status, _log_file, _summary, stdout = reply
    if status != 0:  # an agent from before the health query: it answers, that is all we know
        return "running", None
    health = json.loads(stdout)
    return ("running" if health.get("status") == "ok" else str(health.get("status"))), health


def store_refusal(health: dict | None) -> list[str]:
    """The agent's word on a store it refuses to follow (reset or corrupt): the fix."""
    error = (health or {}).get("storeError")
    return [f"store {health['store']}: {error}"] if health and error else []


def failing_loops(health: dict | None) -> list[str]:
    """One line per failing loop of the agent: its name, restarts and last error."""
    loops = (health or {}).get("loops", {})
    return [
        f"loop {name} failing for {loop.get('failingFor', 0)} s "
        f"({loop['restarts']} restarts): {loop.get('lastError', '?')}"
        for name, loop in loops.items()
        if loop.get("state") == "failing"
    ]


def enforcement_failing(health: dict | None) -> list[str]:
    """The agent's word on a table nft keeps refusing: for how long, and why."""
    state = (health or {}).get("enforcement", {})
    if state.get("state") != "failing":
        return []
    return [
        f"policy enforcement failing for {state.get('failingFor', 0)} s "
        f"({state.get('failures', '?')} attempts): {state.get('error', '?')}"
    ]


def carried(health: dict | None) -> list[str]:
    """The agent's word on the records it carries for hosts not recovered from a reset."""
    hosts = (health or {}).get("carried")
    if not hosts:
        return []
    what = ", ".join(f"{host}: {count} record(s)" for host, count in hosts.items())
    left = (health or {}).get("carriedFor", "?")
    return [
        f"store reset: keeping the records of hosts not recovered yet ({what}) for "
        f"{left} s more: run `netplugctl recover` on them"
    ]


def bad_records(health: dict | None) -> list[str]:
    """One line per store record the agent's parts skip as unreadable."""
    return [
        f"bad record {r['key']} (skipped by {r['part']}): {r['error']}"
        for r in (health or {}).get("badRecords", [])
    ]


def cmd_blocks(store: Store, args: argparse.Namespace) -> int:
    rows = [
        {
            "network": b.network,
            "block": str(b.block),
            "host": b.host,
            "used": b.used,
            "free": b.capacity - b.used,
        }
        for b in inventory.blocks(store)
        if args.network in (None, b.network)
    ]
    render(rows, ["network", "block", "host", "used", "free"], as_json=args.json)
    return 0


def _attachment_rows(store: Store, args: argparse.Namespace) -> list[dict]:
    return [
        {
            "network": a.network,
            "addresses": " ".join(str(x.address) for x in a.allocations),
            "host": a.host,
            "container": a.container_id,
            "ifname": a.ifname,
            "names": " ".join(a.names),
            "netns": a.netns,
        }
        for a in inventory.attachments(store, getattr(args, "host", None))
        if args.network in (None, a.network)
    ]


def cmd_allocations(store: Store, args: argparse.Namespace) -> int:
    columns = ["network", "addresses", "host", "container", "ifname", "names"]
    render(_attachment_rows(store, args), columns, as_json=args.json)
    return 0


def cmd_names(store: Store, args: argparse.Namespace) -> int:
    """Container names (from attachments) and API registrations, with their source."""
    rows = [
        {
            "name": name,
            "network": row["network"],
            "addresses": row["addresses"],
            "host": row["host"],
            "source": "container",
        }
        for row in _attachment_rows(store, args)
        for name in row["names"].split()
    ]
    if args.network is None:
        for kv in store.range(Names.PREFIX, prefix=True).kvs:
            try:
                registration = decode_registration(Names.parse(kv.key), kv.value)
            except ValueError as e:  # the schema's SchemaError and InvalidRegistration
                print(f"netplugctl: skipping unreadable {kv.key}: {e}", file=sys.stderr)
                continue
            rows.append(
                {
                    "name": registration.name,
                    "network": None,
                    "addresses": " ".join(map(str, registration.addresses)),
                    "host": None,
                    "source": "api" + (" (lease)" if kv.lease else ""),
                }
            )
    render(rows, ["name", "network", "addresses", "host", "source"], as_json=args.json)
    return 0


def cmd_hosts(store: Store, args: argparse.Namespace) -> int:
    if getattr(args, "remove", None):
        return cmd_hosts_remove(store, args)
    rows = [
        {
            "host": h.name,
            "vtep": h.vtep or None,
            "state": "live" if h.live else "gone",
            "since": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h.since))
            if h.since
            else None,
            "blocks": " ".join(h.blocks),
            "allocations": h.allocations,
        }
        for h in hosts.hosts(store)
    ]
    render(rows, ["host", "vtep", "state", "since", "blocks", "allocations"], as_json=args.json)
    return 0


def cmd_hosts_remove(store: Store, args: argparse.Namespace) -> int:
    """Release a dead host's blocks, allocations and names; 1 for a live one
    (without --force) and for a host the store does not know."""
    if not args.force and any(h.live for h in hosts.hosts(store) if h.name == args.remove):
        print(
            f"netplugctl: host {args.remove} is live (its netplugd renews its lease): "
            "stop that agent first, or pass --force",
            file=sys.stderr,
        )
        return 1
    removed = hosts.remove_host(store, args.remove)
    if not removed:  # a mistyped name must not read as a host removed
        known = ", ".join(h.name for h in hosts.hosts(store)) or "none"
        print(
            f"netplugctl: no host {args.remove} in store {store.url}: nothing removed "
            f"(hosts: {known})",
            file=sys.stderr,
        )
        return 1
    print(f"removed host {args.remove}: {removed} key(s) released", file=sys.stderr)
    if args.json:  # scripts read stdout
        render([{"host": args.remove, "released": removed}], ["host", "released"], as_json=True)
    return 0


def cmd_gc(store: Store, args: argparse.Namespace) -> int:
    """Release this host's attachments whose container namespace is gone."""
    ipam = IPAM(store, args.host_name)
    released = []
    for a in inventory.attachments(store, args.host_name):
        if args.network in (None, a.network) and _namespace_gone(a):
            if not args.dry_run:
                ipam.release(a.network, a.container_id, a.ifname, a.netns)
            released.append(
                {
                    "network": a.network,
                    "container": a.container_id,
                    "ifname": a.ifname,
                    "addresses": " ".join(str(x.address) for x in a.allocations),
                }
            )
    render(released, ["network", "container", "ifname", "addresses"], as_json=args.json)
    if not args.json:
        verb = "would release" if args.dry_run else "released"
        print(f"{verb} {len(released)} attachment(s) of host {args.host_name}", file=sys.stderr)
    return 0


def _namespace_gone(attachment: Attachment) -> bool:
    """Whether the namespace the attachment was made for no longer exists. A
    living namespace without the interface is not enough: an ADD between its
    allocation and its veth looks just like that (DEL and CNI GC handle the rest)."""
    from netplug.net import netns  # only for gc

    if not attachment.netns:
        return False
    try:
        os.close(netns.open_netns(attachment.netns))
    except netns.NetnsNotFound:
        return True
    except OSError:
        return False
    return False


def cmd_recover(store: Store, args: argparse.Namespace) -> int:
    """Rebuild this host's records in a reset or replaced store (see ctl/recover.py)."""
    rows = recover.recover(store, args.host_name, args.run_dir, recover.host_veths())
    columns = ["network", "policy", "container", "ifname", "addresses", "veth", "state"]
    render([dataclasses.asdict(row) for row in rows], columns, as_json=args.json)
    conflicts = sum(row.conflict for row in rows)
    if conflicts:
        print(
            f"netplugctl: {conflicts} conflict(s): host {args.host_name} still refuses "
            f"store {store.url}; resolve them and run recover again",
            file=sys.stderr,
        )
        return 1
    print(
        f"restored {sum(row.state == recover.RESTORED for row in rows)} record(s); "
        f"host {args.host_name} uses store {store.url} again",
        file=sys.stderr,
    )
    return 0


def cmd_install(args: argparse.Namespace) -> int:
    bin_dir = Path(args.bin_dir)
    document = None
    if not args.no_conflist:
        document = install.conflist(
            args.network,
            args.subnet,
            args.store,
            args.host_name_conf,
            args.cni_version,
            vni=args.vni,
            portmap=not args.no_portmap,
            ip_masq=not args.no_ip_masq,
            autostart=not args.no_autostart,
        )
        try:
            install.check(document)
        except CNIError as e:
            print(f"netplugctl: install: {e.msg} (nothing written)", file=sys.stderr)
            return 2
    written = install.install_plugins(bin_dir)
    if document is not None:
        written.append(install.install_conflist(Path(args.conf_dir), document))
        for plugin in install.chained_elsewhere(document, bin_dir):
            print(
                f"netplugctl: the chain runs {plugin}, which is not in {bin_dir}: make sure "
                "the runtime's plugin path has it (Debian's containernetworking-plugins "
                "puts it in /usr/lib/cni)",
                file=sys.stderr,
            )
    render([{"installed": str(p)} for p in written], ["installed"], as_json=args.json)
    return 0


STORE_COMMANDS = {
    "status": cmd_status,
    "blocks": cmd_blocks,
    "allocations": cmd_allocations,
    "names": cmd_names,
    "hosts": cmd_hosts,
    "gc": cmd_gc,
    "recover": cmd_recover,
    "policy": policy.cmd_policy,
}


def _global_options(p: argparse.ArgumentParser, defaults: bool) -> None:
    """The options every command takes, before or after its name (as people type
    ``netplugctl allocations --json``). Only the top-level parser has defaults: a
    command's parser leaves what it was not given to the top level's."""

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    p.add_argument(
        "--store",
        default=default(os.environ.get("NETPLUG_STORE", DEFAULT_STORE_URL)),
        help=f"store URL (default: $NETPLUG_STORE or {DEFAULT_STORE_URL})",
    )
    p.add_argument(
        "--host-name",
        type=HOST_NAME,
        default=default(os.environ.get("NETPLUG_HOSTNAME") or os.uname().nodename),
        help="this host's name (default: $NETPLUG_HOSTNAME or the hostname)",
    )
    p.add_argument(
        "--json", action="store_true", default=default(False), help="print JSON, not a table"
    )


def command_parsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every command's parser by its words ("hosts remove"), nested commands too."""
    found = {}
    # argparse lists subcommands only through its subparsers action.
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sp in action.choices.items():
                found[name] = sp
                found.update({f"{name} {n}": nested for n, nested in command_parsers(sp).items()})
    return found


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="netplugctl", description=__doc__.split("\n\n")[0])
    _global_options(p, defaults=True)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("status", help="store, agent and totals")
    for name, what in (
        ("blocks", "leased blocks and their use"),
        ("allocations", "every attachment's addresses"),
        ("names", "DNS names registered by containers"),
    ):
        sp = sub.add_parser(name, help=what)
        sp.add_argument("--network", type=NETWORK_NAME, help="only this network")
    sub.choices["allocations"].add_argument("--host", type=HOST_NAME, help="only this host's")
    hs = sub.add_parser("hosts", help="hosts: VTEP, live or gone, blocks")
    hs_sub = hs.add_subparsers(dest="hosts_command", metavar="remove")
    rm = hs_sub.add_parser("remove", help="release a dead host's blocks, allocations and names")
    rm.add_argument("remove", metavar="NAME", type=HOST_NAME)
    rm.add_argument("--force", action="store_true", help="remove even if its agent is live")
    gc = sub.add_parser("gc", help="release this host's attachments whose container is gone")
    gc.add_argument("--network", type=NETWORK_NAME, help="only this network")
    gc.add_argument("--dry-run", action="store_true", help="list, release nothing")
    rec = sub.add_parser(
        "recover", help="rebuild this host's records in a store that was reset or replaced"
    )
    rec.add_argument("--run-dir", default="/run/netplug", help="the configs' runDir (%(default)s)")
    policy.add_parser(sub)
    ins = sub.add_parser("install", help="install the plugins and a conflist for runtimes")
    ins.add_argument("--bin-dir", default="/opt/cni/bin", help="CNI plugin dir (%(default)s)")
    ins.add_argument("--conf-dir", default="/etc/cni/net.d", help="CNI config dir (%(default)s)")
    ins.add_argument(
        "--network", type=NETWORK_NAME, default="netplug", help="network name (%(default)s)"
    )
    ins.add_argument("--subnet", default="10.244.0.0/16", help="cluster subnet (%(default)s)")
    ins.add_argument(
        "--vni",
        type=install.parse_vni,
        help="the network's VXLAN VNI (default: leave it out, the store assigns a free one)",
    )
    ins.add_argument(
        "--host-name-conf",
        metavar="NAME",
        type=HOST_NAME,
        help="hostName to write into the conflist (default: leave it out)",
    )
    ins.add_argument("--cni-version", default="1.0.0", help="conflist cniVersion (%(default)s)")
    ins.add_argument(
        "--no-portmap", action="store_true", help="leave portmap out of the chain (no -p ports)"
    )
    ins.add_argument(
        "--no-ip-masq",
        action="store_true",
        help="write ipMasq false: containers reach no address outside the subnet",
    )
    ins.add_argument(
        "--no-autostart",
        action="store_true",
        help='write "agent": {"autostart": false}: the host runs netplugd itself '
        "(the systemd unit), the plugin never starts one",
    )
    ins.add_argument("--no-conflist", action="store_true", help="install the plugins only")
    for sp in command_parsers(p).values():
        _global_options(sp, defaults=False)
    return p


def missing_store(url: str, command: str) -> str | None:
    """Why ``command`` must not run on ``url``: a SQLite file that does not exist.
    Opening it would create it, and an empty store reads as a cluster with nothing
    in it, which hides a mistyped --store. ``recover`` may create it: it rebuilds
    a store that was lost. Raises ValueError for a malformed URL."""
    parsed = parse_store_url(url)
    if parsed.scheme != "sqlite" or command == "recover" or os.path.exists(parsed.path):
        return None
    return (
        f"store {url} does not exist: no netplug host has used it. Check --store "
        "(default $NETPLUG_STORE): give the store of the networks' configs"
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "install":
        return cmd_install(args)
    try:
        missing = missing_store(args.store, args.command)
        if missing:
            print(f"netplugctl: {missing}", file=sys.stderr)
            return 1
        store = open_store(args.store)
    except (ValueError, StoreError) as e:
        print(f"netplugctl: {e}", file=sys.stderr)
        return 2
    try:
        return STORE_COMMANDS[args.command](store, args)
    except StoreError as e:
        print(f"netplugctl: store {args.store}: {e}", file=sys.stderr)
        return 1
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main())
