"""The fabric's neighbour entries: every lab address knows every other's MAC, for good.

On real machines each host has a kernel, and with it a neighbour table, of its
own. In the lab every namespace shares the box's one table per family, whose
garbage-collected entries are capped at ``gc_thresh3`` (1024) for all of them
together: 40 hosts ARPing for each other's VTEP addresses alone make 1560
entries, and a full table fails new entries (ENOBUFS) and stalls traffic until
garbage collection frees some. Permanent entries are not counted there, and
the lab knows every address and MAC on the fabric (it gives each underlay
interface a MAC made from its address), so it programs them: the simulated
hardware then costs the shared table nothing, and what remains in it is
netplug's and the containers' own.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from netplug.lab.namespaces import run


@dataclass(frozen=True, slots=True)
class Port:
    """One interface on the fabric: its namespace, device name and address."""

    netns: str
    device: str
    address: str


def mac(address: str) -> str:
    """The MAC of the fabric interface that holds IPv4 ``address``: locally
    administered (02:00) and the address's four bytes, unique on the fabric."""
    packed = ipaddress.IPv4Address(address).packed
    return ":".join(f"{b:02x}" for b in (0x02, 0x00, *packed))


def entries(new: Port, others: list[Port]) -> list[tuple[Port, str, str]]:
    """(where, address, MAC) for every permanent entry that ``new`` joining the
    fabric adds: in ``new``'s namespace one per other port, and one for ``new``
    in each other port's namespace. Ports in ``new``'s own namespace are left out."""
    peers = [p for p in others if p.netns != new.netns]
    return [(new, p.address, mac(p.address)) for p in peers] + [
        (p, new.address, mac(new.address)) for p in peers
    ]


def program(new: Port, others: list[Port]) -> None:
    """Program ``entries(new, others)``: one ``ip -batch`` per namespace."""
    by_netns: dict[Port, list[str]] = {}
    for where, address, lladdr in entries(new, others):
        by_netns.setdefault(where, []).append(
            f"neigh replace {address} lladdr {lladdr} dev {where.device} nud permanent\n"
        )
    for where, lines in by_netns.items():
        run("ip", "-n", where.netns, "-batch", "-", input="".join(lines).encode())
