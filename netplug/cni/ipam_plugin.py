"""``netplug-ipam``: netplug's IPAM as a CNI IPAM plugin for other main plugins.

The reference bridge, macvlan and ipvlan plugins delegate to it with
``"ipam": {"type": "netplug-ipam", "subnet": ..., "store": ..., ...}``. It
answers from the same store and with the same allocator as ``netplug``, so
both can share one address space. Standard library only: it never needs
netlink, so it always runs in-process.
"""

from __future__ import annotations

import os
import sys

from netplug.cni import MAX_STDIN, dispatch, logfile
from netplug.cni.attachment import allocate, record_network
from netplug.cni.errors import CNIError
from netplug.cni.netconf import NetConf, parse_ipam_conf
from netplug.cni.request import Request
from netplug.cni.result import IPConfig, Result, Route, from_json
from netplug.cni.status import cmd_status
from netplug.host import Host

USAGE = """\
netplug-ipam: CNI IPAM plugin on netplug's store (CNI spec 0.1.0-1.1.0).

Use it as the "ipam" of a main plugin such as bridge, macvlan or ipvlan:
  "ipam": {"type": "netplug-ipam", "subnet": "10.245.0.0/16",
           "store": "sqlite:///var/lib/netplug/netplug.db", "hostName": "node-1",
           "routes": [{"dst": "0.0.0.0/0"}]}
Fields: subnet (required), subnet6, hostBlockPrefix (24), hostBlockPrefix6 (64),
store, hostName, runDir, logFile, routes (added to the result; a route without
"gw" goes via the block's gateway). See README.md.
"""


def _routes(conf: NetConf, gateways: dict[int, object]) -> tuple[Route, ...]:
    """The ``ipam.routes`` of the config (checked by the parser), a missing gw
    filled with the family's gateway."""
    return tuple(Route(dst, gw or gateways.get(dst.version)) for dst, gw in conf.routes)


def cmd_add(req: Request, host: Host) -> Result:
    conf = req.conf
    record_network(conf, host)
    attachment = allocate(req, host)
    gateways = {a.address.version: a.gateway for a in attachment.allocations}
    return Result(
        ips=tuple(IPConfig(a.address, a.gateway) for a in attachment.allocations),
        routes=_routes(conf, gateways),
    )


def cmd_del(req: Request, host: Host) -> None:
    host.ipam.release(req.conf.name, req.container_id, req.ifname)


def cmd_del_on_reset_store(req: Request, host: Host) -> None:
    """DEL on a store refused as reset or replaced: the store has no record of the
    container, and this plugin keeps nothing on the host (its main plugin removes the
    interface), so DEL succeeds without touching the store; a runtime retries a failed
    DEL forever."""


def cmd_check(req: Request, host: Host) -> None:
    conf = req.conf
    attachment = host.ipam.lookup(conf.name, req.container_id, req.ifname)
    if attachment is None:
        raise CNIError(103, f"no addresses are recorded for {req.container_id}/{req.ifname}")
    if conf.prev_result is not None:
        reported = {ip.address for ip in from_json(conf.prev_result).ips}
        missing = {a.address for a in attachment.allocations} - reported
        if missing:
            raise CNIError(103, f"prevResult lacks {sorted(map(str, missing))}")


def cmd_gc(req: Request, host: Host) -> None:
    conf = req.conf
    valid = set(conf.valid_attachments or ())
    for attachment in host.ipam.attachments(conf.name):
        if (attachment.container_id, attachment.ifname) not in valid:
            host.ipam.release(conf.name, attachment.container_id, attachment.ifname)


NETPLUG_IPAM = dispatch.Plugin(
    {"ADD": cmd_add, "DEL": cmd_del, "CHECK": cmd_check, "GC": cmd_gc, "STATUS": cmd_status},
    conf_parser=parse_ipam_conf,
    on_reset_store={"DEL": cmd_del_on_reset_store},
)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        return 0
    if not os.environ.get("CNI_COMMAND"):
        sys.stderr.write(USAGE)
        return 0
    stdin = sys.stdin.buffer.read(MAX_STDIN + 1)  # enough for the parser to refuse more
    reply = dispatch.handle_in_process(NETPLUG_IPAM, os.environ, stdin)
    sys.stdout.buffer.write(reply.stdout)
    logfile.append(reply.log_file, reply.summary)
    return reply.exit_code
