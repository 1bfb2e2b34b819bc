"""Where netplug keeps things in the store: one place for the key layout.

    /netplug/blocks/<network>/<block CIDR>                   {"host"}
    /netplug/ips/<network>/<block CIDR>/<address>            {"host", "containerID", "ifname"}
    /netplug/attachments/<network>/<host>/<container>/<ifname>   the attachment record
    /netplug/networks/<network>                              {"subnet", "subnet6", "vni", "domain",
                                                              "block_prefix", "block_prefix6"}
    /netplug/network-registry                                {"network"}: the last one recorded
    /netplug/vteps/<network>/<host>                          {"vtep", "mac", "vni"}
    /netplug/hosts/<host>                                    {"vtep", "instance"}, leased
    /netplug/identity                                        {"id"}: the store's identity

A host record lives under its agent's TTL lease: it vanishes when the agent
stops renewing it. Addresses sit under their block, so a block's used addresses are one prefix
range; attachments sit under their host, so "this host's containers" is too.
"""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

ROOT = "/netplug/"


def blocks_prefix(network: str) -> str:
    return f"{ROOT}blocks/{network}/"


def block_key(network: str, block: IPv4Network | IPv6Network) -> str:
    return f"{blocks_prefix(network)}{block}"


def block_ips_prefix(network: str, block: IPv4Network | IPv6Network) -> str:
    return f"{ROOT}ips/{network}/{block}/"


def ip_key(
    network: str, block: IPv4Network | IPv6Network, address: IPv4Address | IPv6Address
) -> str:
    return f"{block_ips_prefix(network, block)}{address}"


def host_attachments_prefix(network: str, host: str) -> str:
    return f"{ROOT}attachments/{network}/{host}/"


def attachments_prefix(network: str) -> str:
    return f"{ROOT}attachments/{network}/"


def attachment_key(network: str, host: str, container_id: str, ifname: str) -> str:
    return f"{host_attachments_prefix(network, host)}{container_id}/{ifname}"


def network_key(network: str) -> str:
    return f"{ROOT}networks/{network}"


def vteps_prefix(network: str) -> str:
    return f"{ROOT}vteps/{network}/"


def vtep_key(network: str, host: str) -> str:
    return f"{vteps_prefix(network)}{host}"


def hosts_prefix() -> str:
    return f"{ROOT}hosts/"


def host_key(host: str) -> str:
    return f"{hosts_prefix()}{host}"


def identity_key() -> str:
    """Written once per store: hosts remember it and refuse a store without it."""
    return f"{ROOT}identity"


def network_registry_key() -> str:
    """Bumped with every network record written: the compare that serializes them."""
    return f"{ROOT}network-registry"


def networks_prefix() -> str:
    return f"{ROOT}blocks/"


def encode(record: dict) -> bytes:
    return json.dumps(record, separators=(",", ":"), sort_keys=True).encode()


def decode(value: bytes) -> dict:
    return json.loads(value)
