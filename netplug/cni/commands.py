"""The CNI commands ADD, DEL, CHECK, GC and STATUS for ``"type": "netplug"``.

Shaped like the reference bridge plugin: the request arrives validated, ADD
runs named steps top to bottom with an ExitStack that undoes whatever the
container owns when a later step fails (shared devices - the bridge, the NAT
table - are ensured, never rolled back), and DEL runs every step even when
earlier ones find nothing.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_interface, ip_network
from typing import TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from netplug import faults
from netplug.cni import errors, local_records, segmentation
from netplug.cni.attachment import allocate, pools, record_network
from netplug.cni.errors import CNIError
from netplug.cni.host_paths import container_netns, require_run_dir, require_writable_run_dir
from netplug.cni.netconf import NetConf
from netplug.cni.request import Request
from netplug.cni.result import DNS, Interface, IPConfig, Result, Route, from_json
from netplug.cni.status import cmd_status
from netplug.host import Host
from netplug.ipam import identity, vteps
from netplug.ipam.allocations import Allocation, Attachment
from netplug.ipam.networks import NetworkRecord
from netplug.ipam.pending import PendingReleases
from netplug.ipam.schema import Attachments
from netplug.ipam.store.base import StoreUnavailable
from netplug.locks import network_lock
from netplug.net import (
    NetError,
    addresses,
    bridge,
    conntrack,
    links,
    masq,
    netns,
    sysctl,
    unlink,
    veth,
    vxlan,
)
from netplug.net.mtu import VXLAN_OVERHEAD_V4, overlay_mtu
from netplug.net.rtnl import Rtnl

log = logging.getLogger(__name__)

# netplug's own error codes (the spec leaves 100+ to plugins).
INTERFACE_EXISTS = 102
# How long the agent trusts what it last saw of the host: the underlay (interface
# and VTEP address) and the forwarding sysctls.
SEEN_TTL = 30.0
CHECK_FAILED = 103
# DEL's bound on a veth deletion, which the kernel has never been seen to take
# more than a fraction of a second for.
UNLINK_TIMEOUT = 30.0
T = TypeVar("T")


def _default_route(allocation: Allocation) -> IPv4Network | IPv6Network:
    return ip_network("0.0.0.0/0" if allocation.address.version == 4 else "::/0")


def _gateway_on_bridge(allocation: Allocation):
    return ip_interface((allocation.gateway, allocation.block.prefixlen))


# -- ADD ------------------------------------------------------------------------


@container_netns
def cmd_add(req: Request, host: Host) -> Result:
    """Attach the container; raises CNIError, leaving nothing behind on failure."""
    conf = req.conf
    require_writable_run_dir(conf, host)
    with (
        netns.opened(req.netns, req.seen_by) as container,
        netns.channel(container) as crt,
        netns.channel() as rt,
        netns.handle() as ipr,
        ExitStack() as undo,
    ):
        _require_new_interface(req, container)
        _settle_pending_releases(conf, host)
        network = record_network(conf, host)
        attachment = allocate(req, host)
        undo.callback(_quietly, "release addresses", _release_or_defer, req, host)
        _settled(host, attachment)
        host_end = veth.host_veth_name(req.container_id, req.ifname)
        _require_unheld(conf, host, attachment, host_end)
        # The host's own copy: what `netplugctl recover` rebuilds a reset store from.
        local_records.write(conf.run_dir, host.name, attachment, host_end)
        forget = functools.partial(
            local_records.remove, conf.run_dir, host.name, conf.name, host_end
        )
        undo.callback(_quietly, "forget the local record", forget)
        under, mtu = _underlay_and_mtu(ipr, conf, host)
        gateways = tuple(_gateway_on_bridge(a) for a in attachment.allocations)
        bridge_spec = bridge.BridgeSpec(conf.bridge, mtu, gateways)
        try:
            br = _step("ensure_bridge", bridge.ensure_bridge, ipr, bridge_spec, host.seen)
        except bridge.GatewayElsewhere as e:
            raise CNIError(errors.INVALID_CONFIG, str(e)) from e
        ipv6 = conf.subnet6 is not None
        # Reading a sysctl costs more as a namespace's interfaces grow (the kernel
        # compares names along the way): an agent looks once per SEEN_TTL.
        host.remembered(
            ("forwarding", ipv6),
            SEEN_TTL,
            lambda: _step("enable_forwarding", sysctl.enable_forwarding, ipv6),
        )
        vtep = None
        if under is not None:  # else a single host: no overlay
            vxlan_spec = _vxlan_spec(conf, under, network.vni, mtu, attachment)
            vtep = _ensure_overlay(ipr, conf, host, vxlan_spec)
        _keep_network(conf, host, network, vtep)
        # Covered by the policy table before the container has an interface.
        _step("enforce", _cover, conf, host, network, attachment)
        undo.callback(_quietly, "uncover", _uncover, conf, host, attachment.key, False)
        container_ips = [str(a.address.ip) for a in attachment.allocations]
        # Packets the host routed to these addresses before the cover were judged
        # as to nobody's (no set holds them) and wait in the bridge's neighbour
        # queue: deleting the entry drops them, so none reaches the container
        # under that verdict (and its reply cannot make it an allowed connection).
        _step("drop_early_packets", bridge.forget_container, rt, br.index, container_ips)
        # Undo registered first: create_pair can fail after the kernel made the pair.
        undo.callback(_quietly, "delete veth", links.delete, rt, host_end)
        pair_spec = veth.PairSpec(host_end, req.ifname, mtu, br.index, _mac(conf, attachment))
        pair = _step("create_pair", veth.create_pair, rt, crt, container, pair_spec)
        ips = attachment.allocations
        routes = _step(
            "configure_container", _configure_container, crt, pair.container.index, ips, conf
        )
        undo.callback(
            _quietly, "forget container", bridge.forget_container, rt, br.index, container_ips
        )
        _step(
            "learn_container",
            bridge.learn_container,
            rt,
            br.index,
            container_ips,
            pair.container.mac,
        )
        if conf.ip_masq:
            _step("masq", _ensure_masq, conf, host)
        undo.pop_all()
    return _result(req, br, pair, attachment, mtu, routes)


def _mac(conf: NetConf, attachment: Attachment) -> str:
    """The container's MAC: the one asked for (podman's ``--mac-address``), else
    from its IPv4 address (a network always has one: ``subnet``)."""
    return conf.mac or veth.container_mac(
        next(a.address.ip for a in attachment.allocations if a.address.version == 4)
    )


def _underlay_and_mtu(ipr: IPRoute, conf: NetConf, host: Host) -> tuple[vxlan.Underlay | None, int]:
    """The underlay (None: a single host, no overlay) and the network's MTU, which
    ADD gives the bridge and both veth ends every time: an emptied bridge forgets
    its MTU, so nothing may be inherited from it. An agent looks once per SEEN_TTL."""
    device = conf.vxlan.device
    under = host.remembered(("underlay", device), SEEN_TTL, lambda: vxlan.underlay(ipr, device))
    if conf.mtu:
        return under, conf.mtu
    if under is not None:  # "mtu": 0 means the underlay's MTU minus VXLAN's overhead
        return under, under.link.mtu - VXLAN_OVERHEAD_V4
    return under, host.remembered(
        ("overlay mtu", device), SEEN_TTL, lambda: overlay_mtu(ipr, device)
    )


def _step(point: str, func: Callable[..., T], *args: object) -> T:
    """One of ADD's steps, where a test may inject a failure (``netplug.faults``)."""
    return faults.step(point, NetError, func, *args)


def _vxlan_spec(
    conf: NetConf, under: vxlan.Underlay, vni: int, mtu: int, attachment: Attachment
) -> vxlan.VxlanSpec:
    """The device holds each of this host's blocks' network address, as a /32."""
    block_addresses = tuple(ip_interface(a.block.network_address) for a in attachment.allocations)
    return vxlan.VxlanSpec(vni, conf.vxlan.port, under, mtu, block_addresses)


def _ensure_overlay(ipr: IPRoute, conf: NetConf, host: Host, spec: vxlan.VxlanSpec) -> dict:
    """The network's VXLAN device (shared: never rolled back), and this host's
    VTEP record, which it returns."""
    device = vxlan.ensure_vxlan(ipr, spec, host.seen)
    vtep = {"vtep": str(spec.under.address), "mac": device.mac, "vni": spec.vni}
    vteps.publish(host.store, conf.name, host.name, **vtep)
    return vtep


def _keep_network(conf: NetConf, host: Host, network: NetworkRecord, vtep: dict | None) -> None:
    """The host's copy of its network and VTEP records, for `netplugctl recover`;
    an agent writes it once per change."""
    kept = {"network": asdict(network), "vtep": vtep}
    host.remembered(
        ("kept network", conf.run_dir, conf.name, json.dumps(kept, sort_keys=True)),
        math.inf,
        lambda: local_records.write_network(conf.run_dir, host.name, conf.name, kept),
    )


def _cover(conf: NetConf, host: Host, network: NetworkRecord, attachment: Attachment) -> None:
    """The container's share of the table (isolation, policy sets): through the
    agent's enforcer, else programmed here from the store (no agent follows it)."""
    if host.enforcer is not None:
        info = segmentation.network_info(conf.name, network)
        host.enforcer.cover(attachment.key, segmentation.endpoint(attachment), info)
    else:
        segmentation.refresh(host, conf.run_dir)


def _uncover(conf: NetConf, host: Host, key: str, released: bool) -> None:
    """The container's elements go (DEL, a failed ADD); without an agent the
    table is programmed again once the store has released the addresses."""
    if host.enforcer is not None:
        host.enforcer.uncover(key)
    elif released:
        segmentation.refresh(host, conf.run_dir)


def _settle_pending_releases(conf: NetConf, host: Host) -> None:
    """Releases a store outage deferred go first: they may free this very address."""
    pending = PendingReleases(conf.run_dir, host.name)
    if pending:
        pending.replay(host.ipam)


def _require_unheld(conf: NetConf, host: Host, attachment: Attachment, host_end: str) -> None:
    """Refuse an address the store handed out while a live container of this host
    holds it: the store lost that container's records (reset, restored from an
    old copy, edited by hand). One readlink per address, plus an ioctl on a hit."""
    for a in attachment.allocations:
        holder = local_records.holder(conf.run_dir, host.name, conf.name, a.address.ip)
        if holder is not None and holder != host_end and links.index(holder) is not None:
            raise CNIError(
                errors.STORE_RESET,
                f"store was reset or replaced: it handed out {a.address.ip}, which a running "
                f"container of host {host.name} holds (host veth {holder}): its records are "
                "missing from the store. Nothing was changed; run "
                f"`{identity.recover_command(host.store_memory(conf.run_dir))}`",
            )


def _require_new_interface(req: Request, container: int) -> None:
    if netns.link_index(container, req.ifname) is not None:
        raise CNIError(
            INTERFACE_EXISTS,
            f"interface {req.ifname} already exists in {req.netns}: "
            "DEL the earlier attachment or choose another CNI_IFNAME",
        )


def _configure_container(
    crt: Rtnl, index: int, allocations: tuple[Allocation, ...], conf: NetConf
) -> tuple[Route, ...]:
    """Addresses, then a default route per family via the block's gateway (a route
    needs its gateway's subnet on the link); the routes made, for the result.

    Where another interface of the container holds the family's default route
    already (a second network: eth1 beside eth0), that one is kept and this
    interface gets a route to its network's whole subnet instead: the block's
    prefix alone would send traffic to the network's other blocks (other hosts)
    out of the first interface, from its address, into another segment."""
    for allocation in allocations:
        crt.add_address(index, allocation.address, addresses.flags_for(allocation.address))
    made = []
    for allocation in allocations:
        for dst in (_default_route(allocation), _subnet(conf, allocation)):
            try:
                crt.add_route(dst, str(allocation.gateway), index)
            except NetlinkError as e:
                if e.code != links.EEXIST:
                    raise
                continue
            made.append(Route(dst, allocation.gateway))
            break
    return tuple(made)


def _subnet(conf: NetConf, allocation: Allocation) -> IPv4Network | IPv6Network:
    """The network's subnet of the allocation's family."""
    return conf.subnet if allocation.address.version == 4 else conf.subnet6


def _result(
    req: Request,
    br: links.Link,
    pair: veth.VethPair,
    attachment: Attachment,
    mtu: int,
    routes: tuple[Route, ...],
) -> Result:
    conf = req.conf
    gateways = [str(a.gateway) for a in attachment.allocations]
    return Result(
        interfaces=(
            Interface(br.name, br.mac),
            Interface(pair.host.name, pair.host.mac),
            Interface(req.ifname, pair.container.mac, mtu=mtu, sandbox=req.netns),
        ),
        ips=tuple(IPConfig(a.address, a.gateway, interface=2) for a in attachment.allocations),
        routes=routes,
        dns=DNS(nameservers=(gateways[0],), search=(f"{conf.name}.{conf.domain}",)),
    )


def _quietly(what: str, func, *args) -> None:
    """Run an undo step; log instead of raising, so the original error is reported."""
    try:
        faults.check(f"undo {what}", NetError)
        func(*args)
    except Exception:
        log.exception("undo step %r failed", what)


# -- DEL ------------------------------------------------------------------------


def cmd_del(req: Request, host: Host) -> None:
    """Detach the container: idempotent, works without netns or prevResult. A
    CNI_NETNS that holds no namespace (a file left where one was mounted, a
    directory) counts as gone, as a missing one does: the host end goes, and
    with it the container end wherever it is, and the addresses are released.

    Every step runs; the first failure is raised after all have been tried.
    The address release runs last and always (the spec's order); when the
    store cannot be reached it is kept on the host and DEL still succeeds.
    """
    _detach(req, host, release=True)


def cmd_del_on_reset_store(req: Request, host: Host) -> None:
    """DEL while the store is refused as reset or replaced (``dispatch``): the
    interfaces and the host's copy of the record go, the store is not touched.
    Not released, not deferred: a reset store has no record of the container,
    and with the copy gone ``netplugctl recover`` does not rebuild one; a store
    restored from an older copy that still holds it is left to CNI GC."""
    _detach(req, host, release=False)


def _detach(req: Request, host: Host, release: bool) -> None:
    conf = req.conf
    writable = os.access(require_run_dir(conf, host), os.W_OK)
    failures: list[Exception] = []
    host_end = veth.host_veth_name(req.container_id, req.ifname)
    kept = local_records.read(conf.run_dir, host.name, conf.name, host_end)
    if kept is None and _on_another_bridge(conf, host_end):
        log.info(
            "DEL container=%s ifname=%s network=%s: the interface is another network's "
            "now (on another bridge): leaving it",
            req.container_id,
            req.ifname,
            conf.name,
        )
    # Deleting either end of a veth deletes both: the host end needs its own
    # request only when the container end was already gone.
    elif not _attempt(failures, _delete_container_end, req):
        _attempt(failures, _delete_host_end, req)
    try:
        # Before the release: until then no other container can hold these addresses.
        _attempt(failures, _forget_connections, conf, host, host_end, kept, "DEL")
        forgotten = _attempt(failures, _forget_container, conf, host, host_end, kept)
        released = release and _release_or_defer(req, host)
        key = Attachments.key(conf.name, host.name, req.container_id, req.ifname)
        # Without an agent the policy table and the NAT table take a lock file
        # under runDir: a read-only one leaves them to the next ADD there.
        _attempt(failures, _uncover, conf, host, key, released and writable)
        if not writable:
            _left_run_dir(req)
        elif released and conf.ip_masq:
            _attempt(failures, _drop_masq_when_unused, conf, host)
        if forgotten and writable:  # else the retried DEL needs the record for the entries
            _attempt(failures, local_records.remove, conf.run_dir, host.name, conf.name, host_end)
    finally:
        if host.conntrack is not None:
            host.conntrack.go()  # DEL's own steps first: they compete for the CPU
    if failures:
        raise failures[0]


def _left_run_dir(req: Request) -> None:
    """DEL on a runDir that cannot be written (a read-only file system) freed the
    interfaces and addresses, which is what a runtime retries a failed DEL for, for
    ever (a pod stuck terminating), and left what lives under runDir: the host's
    copy of the record, and without an agent the policy and NAT tables, which the
    next ADD there (refused until runDir can be written) programs from the store."""
    log.warning(
        "DEL container=%s ifname=%s network=%s: runDir %s is not writable: freed the "
        "interfaces and addresses, left what is under runDir as it is",
        req.container_id,
        req.ifname,
        req.conf.name,
        req.conf.run_dir,
    )


def _on_another_bridge(conf: NetConf, host_end: str) -> bool:
    """Whether ``host_end`` is on another bridge than this network's. Asked when
    this network keeps no record of the veth (its DEL came before, and this one
    late: a runtime's retry, a stale cache's GC): then the interface is another
    network's (podman's ``network disconnect``, then ``connect`` to another
    network, gave that one the freed ifname); the veth's name has no network in it."""
    with netns.handle() as ipr:
        link = links.find(ipr, host_end)
    return link is not None and link.master not in (0, links.index(conf.bridge))


def _forget_connections(
    conf: NetConf, host: Host, host_end: str, kept: Attachment | None, why: str
) -> None:
    """Delete the host's conntrack entries of the addresses the container (``kept``:
    this host's copy of its record) still holds here (``local_records.holding``:
    not one another container took since), once
    its interface is gone and before the store can hand them out again: a new
    container on one of them must not continue a connection under the verdict
    its predecessor got, nor a UDP flow whose sender keeps it alive
    (``netplug.net.conntrack``). A failure is logged; it never fails DEL."""
    held = local_records.holding(conf.run_dir, host.name, conf.name, host_end, kept)
    if not held:
        return
    addresses, why = [ip_address(a) for a in held], f"{why} of {host_end}"
    if host.conntrack is not None:  # the agent: started as DEL ends; ADD waits for it
        host.conntrack.submit(addresses, why, start=False)
    else:
        conntrack.forget_or_log(addresses, why)


def _settled(host: Host, attachment: Attachment) -> None:
    """Wait until the agent has deleted the conntrack entries a DEL left for one of
    the attachment's addresses (on a full host, the address just released)."""
    addresses = [a.address.ip for a in attachment.allocations]
    if host.conntrack is not None and not host.conntrack.wait(addresses):
        log.warning("ADD: conntrack entries of %s still being deleted", addresses)


def _forget_container(conf: NetConf, host: Host, host_end: str, kept: Attachment | None) -> bool:
    """Delete the bridge's permanent neighbour entries for the addresses that the
    container behind ``host_end`` (``kept``: this host's copy of its record) holds
    on this host; True once none is left."""
    bridge_index = links.index(conf.bridge)
    held = local_records.holding(conf.run_dir, host.name, conf.name, host_end, kept)
    if bridge_index is not None and held:
        faults.check("forget_container", NetError)
        with netns.channel() as rt:
            bridge.forget_container(rt, bridge_index, held)
    return True


def _release_or_defer(req: Request, host: Host) -> bool:
    """Release the attachment's addresses; when the store cannot be reached, keep
    the release on the host for later (False), so that neither DEL nor a failed
    ADD's undo leaves an address taken for good."""
    conf = req.conf
    try:
        faults.check("release", StoreUnavailable)
        host.ipam.release(conf.name, req.container_id, req.ifname)
    except StoreUnavailable:
        PendingReleases(conf.run_dir, host.name).record(
            conf.name, req.container_id, req.ifname, req.netns
        )
        return False
    return True


def _attempt(failures: list[Exception], func, *args):
    """``func(*args)``, or None with the error added to ``failures``."""
    try:
        return func(*args)
    except Exception as e:
        log.warning("DEL step %s failed: %s", func.__name__, e)
        failures.append(e)
        return None


def _delete_container_end(req: Request) -> bool:
    """Delete the container's interface (and with it the host end); whether there
    was one to delete. Returns once the host end is unlisted (``unlink``)."""
    if not req.netns:
        return False
    host_end = links.index(veth.host_veth_name(req.container_id, req.ifname))
    return unlink.delete(functools.partial(_delete_in_netns, req), host_end, UNLINK_TIMEOUT)


def _delete_in_netns(req: Request) -> bool:
    try:
        with netns.opened(req.netns, req.seen_by) as fd, netns.channel(fd) as crt:
            return links.delete(crt, req.ifname)
    except (netns.NetnsNotFound, OSError) as e:
        log.info("container namespace %s is gone (%s): nothing to delete there", req.netns, e)
        return False


def _delete_host_end(req: Request) -> None:
    name = veth.host_veth_name(req.container_id, req.ifname)
    unlink.delete(functools.partial(_delete_here, name), links.index(name), UNLINK_TIMEOUT)


def _delete_here(name: str) -> bool:
    """Delete link ``name`` of this thread's namespace, on a socket of its own
    (``unlink`` runs this in a thread that ends after it)."""
    rt = Rtnl()
    try:
        return links.delete(rt, name)
    finally:
        rt.close()


def _ensure_masq(conf: NetConf, host: Host) -> None:
    """The network's NAT table: written by nft when missing, then remembered by
    the agent (CHECK notices a table someone else removed)."""
    subnets = [p.subnet for p in pools(conf)]
    # Checked under the lock: a DEL removing the table holds it while it forgets.
    with network_lock(conf.run_dir, host.name, conf.name):
        if host.seen.masq_subnets(conf.name) != subnets:
            if not masq.present(conf.name):
                masq.ensure(conf.name, subnets)
            host.seen.saw_masq(conf.name, subnets)


def _drop_masq_when_unused(conf: NetConf, host: Host) -> None:
    with network_lock(conf.run_dir, host.name, conf.name):
        if not host.ipam.has_attachments(conf.name):
            masq.remove(conf.name)
            host.seen.forget_masq(conf.name)


# -- CHECK ----------------------------------------------------------------------


@container_netns
def cmd_check(req: Request, host: Host) -> None:
    """Verify what ADD made still stands (only what netplug made: later chained
    plugins may add to it). Raises CNIError(CHECK_FAILED) naming the difference."""
    require_run_dir(req.conf, host)
    # Opened before anything is compared: a CNI_NETNS that holds no namespace is
    # code 4, whatever else is wrong.
    with netns.opened(req.netns, req.seen_by) as container:
        _check(req, host, container)


def _check(req: Request, host: Host, container: int) -> None:
    conf = req.conf
    if conf.prev_result is None:
        raise CNIError(
            errors.INVALID_CONFIG, "CHECK needs prevResult: run it through a CNI runtime"
        )
    attachment = host.ipam.lookup(conf.name, req.container_id, req.ifname)
    if attachment is None:
        _check_failed(f"no addresses are recorded for {req.container_id}/{req.ifname}")
    expected = {a.address for a in attachment.allocations}
    reported = {ip.address for ip in from_json(conf.prev_result).ips}
    if not expected <= reported:
        _check_failed(
            f"prevResult lists {sorted(map(str, reported))}, "
            f"IPAM holds {sorted(map(str, expected))}"
        )
    _check_container(req, container, attachment)
    _check_host(req, attachment)
    if conf.ip_masq and not masq.present(conf.name):
        _check_failed(f"the masquerade table {masq.table_name(conf.name)} is missing")


def _check_failed(message: str):
    raise CNIError(CHECK_FAILED, message)


def _check_container(req: Request, container: int, attachment: Attachment) -> None:
    with netns.handle(container) as cipr:
        link = links.find(cipr, req.ifname)
        if link is None:
            _check_failed(f"interface {req.ifname} is missing from {req.netns}")
        present = addresses.addresses(cipr, link.index)
        routes = set(addresses.routes_via(cipr, link.index))
    conf = req.conf
    for allocation in attachment.allocations:
        if allocation.address not in present:
            _check_failed(f"address {allocation.address} is missing from {req.ifname}")
        gateway = str(allocation.gateway)
        # ADD's route: the default, or the subnet's where another interface had the default.
        wanted = {
            (str(_default_route(allocation)), gateway),
            (str(_subnet(conf, allocation)), gateway),
        }
        if not wanted & routes:
            _check_failed(
                f"neither a default route nor a route to {_subnet(conf, allocation)} via "
                f"{allocation.gateway} is on {req.ifname} in {req.netns}"
            )


def _check_host(req: Request, attachment: Attachment) -> None:
    conf = req.conf
    with netns.handle() as ipr:
        br = links.find(ipr, conf.bridge)
        host_end = links.find(ipr, veth.host_veth_name(req.container_id, req.ifname))
        if br is None:
            _check_failed(f"bridge {conf.bridge} is missing")
        if host_end is None or host_end.master != br.index:
            _check_failed(f"the host end of {req.ifname} is missing or not on bridge {conf.bridge}")
        on_bridge = addresses.addresses(ipr, br.index)
    for allocation in attachment.allocations:
        if _gateway_on_bridge(allocation) not in on_bridge:
            _check_failed(f"gateway {allocation.gateway} is missing from bridge {conf.bridge}")


# -- GC (STATUS is the IPAM's: ready when the store answers and pools have room)


def cmd_gc(req: Request, host: Host) -> None:
    """Release every attachment of this host not in ``cni.dev/valid-attachments``,
    and remove host veths of this network that belong to none. An attachment
    whose bridge entries could not be deleted is not released: the store is
    where the next GC finds it (the runtime retries a failed GC)."""
    conf = req.conf
    require_writable_run_dir(conf, host)
    valid = set(conf.valid_attachments or ())
    failures: list[Exception] = []
    for attachment in host.ipam.attachments(conf.name):
        if (attachment.container_id, attachment.ifname) not in valid:
            log.info("GC: releasing %s/%s", attachment.container_id, attachment.ifname)
            host_end = veth.host_veth_name(attachment.container_id, attachment.ifname)
            kept = local_records.read(conf.run_dir, host.name, conf.name, host_end)
            _attempt(failures, _forget_connections, conf, host, host_end, kept, "GC")
            if not _attempt(failures, _forget_container, conf, host, host_end, kept):
                continue  # kept in the store: where the next GC finds the entries again
            cid, ifname = attachment.container_id, attachment.ifname
            if _attempt(failures, host.ipam.release, conf.name, cid, ifname):
                _attempt(
                    failures, local_records.remove, conf.run_dir, host.name, conf.name, host_end
                )
    if host.conntrack is not None:
        host.conntrack.go()
    _attempt(failures, _delete_stale_veths, conf, valid)
    if host.enforcer is None:  # an agent's enforcer follows the releases in the store
        _attempt(failures, segmentation.refresh, host, conf.run_dir)
    if conf.ip_masq:
        _attempt(failures, _drop_masq_when_unused, conf, host)
    if failures:
        raise failures[0]


def _delete_stale_veths(conf: NetConf, valid: set[tuple[str, str]]) -> None:
    keep = {veth.host_veth_name(cid, ifname) for cid, ifname in valid}
    with netns.handle() as ipr, netns.channel() as rt:
        br = links.find(ipr, conf.bridge)
        if br is None:
            return
        for link in links.all_links(ipr):
            if (
                link.master == br.index
                and veth.is_host_veth_name(link.name)
                and link.name not in keep
            ):
                log.info("GC: deleting stale veth %s", link.name)
                links.delete(rt, link.name)


COMMANDS = {"ADD": cmd_add, "DEL": cmd_del, "CHECK": cmd_check, "GC": cmd_gc, "STATUS": cmd_status}
# What still runs on a store refused as reset or replaced (the others get 104).
ON_RESET_STORE = {"DEL": cmd_del_on_reset_store}
