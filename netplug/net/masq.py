"""Source NAT for traffic that leaves a network's subnet (``ipMasq``).

Each network gets its own nftables table, so that adding is one atomic batch
and removing is dropping the table: nothing netplug did is mixed into rules
that other tools own. The ``nft`` binary writes the rules (as netavark and
firewalld use libnftables); netlink answers whether a table exists, so a
table already in place costs no exec.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from ipaddress import IPv4Network, IPv6Network

from pyroute2.nftables.main import NFTables

from netplug.net import NetError

NFT_TIMEOUT = 5.0
NFPROTO_INET = 1


def table_name(network: str) -> str:
    return "netplug-" + re.sub(r"[^A-Za-z0-9_.-]", "_", network)


def _nft(script: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["nft", "-f", "-"], input=script, capture_output=True, text=True, timeout=NFT_TIMEOUT
        )
    except FileNotFoundError as e:
        raise NetError("ipMasq needs the nft command: apt-get install nftables") from e


def ruleset(network: str, subnets: Sequence[IPv4Network | IPv6Network]) -> str:
    """The nft batch that (re)writes the network's table (pure)."""
    table = f"inet {table_name(network)}"
    lines = [
        f"add table {table}",
        f"flush table {table}",
        f"add chain {table} postrouting {{ type nat hook postrouting priority srcnat; }}",
    ]
    for subnet in subnets:
        ip = "ip" if subnet.version == 4 else "ip6"
        lines.append(
            f"add rule {table} postrouting {ip} saddr {subnet} {ip} daddr != {subnet} masquerade"
        )
    return "\n".join(lines) + "\n"


def ensure(network: str, subnets: Sequence[IPv4Network | IPv6Network]) -> None:
    """Install the network's masquerade rules (idempotent, atomic)."""
    done = _nft(ruleset(network, subnets))
    if done.returncode != 0:
        raise NetError(f"nft could not install masquerading for {network}: {done.stderr.strip()}")


def remove(network: str) -> None:
    """Drop the network's table; absent already is fine."""
    done = _nft(f"delete table inet {table_name(network)}\n")
    if done.returncode != 0 and "No such file" not in done.stderr:
        raise NetError(f"nft could not remove masquerading for {network}: {done.stderr.strip()}")


def present(network: str) -> bool:
    """Whether the network's table exists (over netlink: no exec)."""
    nft = NFTables(nfgen_family=NFPROTO_INET)
    try:
        return any(t.get_attr("NFTA_TABLE_NAME") == table_name(network) for t in nft.get_tables())
    finally:
        nft.close()
