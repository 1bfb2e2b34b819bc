"""What a long-lived process last saw of the host's shared devices.

A warm agent skips the netlink work of ADD's shared steps (the bridge, its
gateway addresses, the VXLAN device's addresses, the NAT table) when it did
that work before. One ``Seen`` per host, owned by ``netplug.host.Host``;
``net`` functions read and update it through its methods, never its
insides. A fact is dropped explicitly when it turns out wrong: a link whose
index changed takes its addresses with it, and an address that the link no
longer holds with its prefix (``link_addresses.held``, one netlink dump of
that link, about 0.1 ms) is forgotten and added again. Thread-safe: the
agent's workers share one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from ipaddress import IPv4Interface, IPv6Interface
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # links imports pyroute2; netplug-ipam's start-up path holds a Host
    from netplug.net.links import Link

Interface = IPv4Interface | IPv6Interface


class Seen:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._links: dict[str, Link] = {}
        self._addresses: set[tuple[int, Interface]] = set()
        self._masq: dict[str, list] = {}

    # -- links ------------------------------------------------------------------

    def link(self, name: str) -> Link | None:
        with self._lock:
            return self._links.get(name)

    def saw_link(self, link: Link) -> None:
        with self._lock:
            old = self._links.get(link.name)
            self._links[link.name] = link
            if old is not None and old.index != link.index:
                self._drop_addresses(old.index)

    def forget_link(self, name: str) -> None:
        """The link is gone or was replaced: forget it and every address on it."""
        with self._lock:
            old = self._links.pop(name, None)
            if old is not None:
                self._drop_addresses(old.index)

    def _drop_addresses(self, index: int) -> None:
        self._addresses = {(i, a) for i, a in self._addresses if i != index}

    # -- addresses ----------------------------------------------------------------

    def missing(self, index: int, wanted: Iterable[Interface]) -> list[Interface]:
        """Those of ``wanted`` that this process did not put on link ``index``, or
        that the link no longer holds with their prefix (one dump of the link,
        only when something is remembered); a fact found wrong is dropped."""
        wanted = list(wanted)
        with self._lock:
            remembered = [a for a in wanted if (index, a) in self._addresses]
        if not remembered:
            return wanted
        from netplug.net.link_addresses import held  # pyroute2: off netplug-ipam's path

        try:
            on_link = held(index)
        except OSError:  # no answer: adding again is harmless (EEXIST), missing one is not
            on_link = frozenset()
        for address in remembered:
            if address not in on_link:
                self.forget_address(index, address)
        return [a for a in wanted if a not in remembered or a not in on_link]

    def saw_address(self, index: int, address: Interface) -> None:
        with self._lock:
            self._addresses.add((index, address))

    def forget_address(self, index: int, address: Interface) -> None:
        with self._lock:
            self._addresses.discard((index, address))

    # -- NAT tables ---------------------------------------------------------------

    def masq_subnets(self, network: str) -> list | None:
        with self._lock:
            return self._masq.get(network)

    def saw_masq(self, network: str, subnets: list) -> None:
        with self._lock:
            self._masq[network] = subnets

    def forget_masq(self, network: str) -> None:
        with self._lock:
            self._masq.pop(network, None)

    def clear(self) -> None:
        """Forget everything: the next ADD asks the kernel about each fact."""
        with self._lock:
            self._links.clear()
            self._addresses.clear()
            self._masq.clear()
