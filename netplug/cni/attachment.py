"""What an attachment asks of the IPAM, derived from the config (pure, stdlib).

Shared by the netplug plugin and netplug-ipam, neither of which should import
the other's heavy parts to learn it.
"""

from __future__ import annotations

import logging

from netplug.cni.netconf import NetConf
from netplug.cni.request import Request
from netplug.host import Host
from netplug.ipam.allocations import Attachment, Pool
from netplug.ipam.blocks import Address
from netplug.ipam.networks import NetworkRecord, ensure_network
from netplug.ipam.schema import VXLAN_PORT
from netplug.names import is_dns_label

log = logging.getLogger(__name__)


def pools(conf: NetConf) -> list[Pool]:
    found = [Pool(conf.subnet, conf.host_block_prefix)]
    if conf.subnet6 is not None:
        found.append(Pool(conf.subnet6, conf.host_block_prefix6))
    return found


def network_record(conf: NetConf) -> NetworkRecord:
    """What the config says of its network; a VNI of None asks the store for one."""
    # Only netplug's own networks have a VXLAN device; netplug-ipam's claim no VNI.
    vni = conf.vxlan.vni if conf.type == "netplug" else 0
    return NetworkRecord(
        str(conf.subnet),
        str(conf.subnet6 or ""),
        vni,
        conf.domain,
        conf.host_block_prefix,
        conf.host_block_prefix6 if conf.subnet6 is not None else 0,
        conf.isolate and conf.type == "netplug",
        conf.vxlan.port if conf.type == "netplug" else VXLAN_PORT,
    )


def record_network(conf: NetConf, host: Host) -> NetworkRecord:
    """The network as recorded in the store (its VNI assigned there when the config
    has none), after making sure it does not conflict with another (raises
    NetworkConflict, code 7). Run before ``allocate``."""
    return ensure_network(host.store, conf.name, network_record(conf))


def allocate(req: Request, host: Host) -> Attachment:
    """The attachment's addresses (idempotent), on a network ``record_network`` checked."""
    conf = req.conf
    return host.ipam.allocate(
        conf.name,
        pools(conf),
        req.container_id,
        req.ifname,
        static_addresses(conf),
        dns_names(conf),
        req.netns,
    )


def static_addresses(conf: NetConf) -> tuple[Address, ...]:
    """Requested addresses without prefix: the block decides the prefix."""
    return tuple(getattr(a, "ip", a) for a in conf.static_ips)


def dns_names(conf: NetConf) -> tuple[str, ...]:
    """The aliases that can be DNS names, lower-cased; the others are logged and skipped."""
    valid = []
    for name in conf.aliases:
        if is_dns_label(name):
            valid.append(name.lower())
        else:
            log.warning("not registering %r in DNS: not a valid DNS label", name)
    return tuple(dict.fromkeys(valid))
