"""What a long-lived process last saw of the host's shared devices.

A warm agent skips the netlink work of ADD's shared steps (the bridge, its
gateway addresses, the VXLAN device's addresses, the NAT table) when it did
that work before. One ``Seen`` per host, owned by ``netplug.host.Host``;
``net`` functions read and update it through its methods, never its
insides. A fact is dropped explicitly when it turns out wrong: a link whose
index changed takes its addresses with it, and an address that the link no
longer holds with its prefix (``link_addresses.holds``, a filtered netlink
dump: tens of microseconds) is forgotten and added again. Thread-safe: the
agent's workers share one.
"""

from __future__ import annotations

import threading
from ipaddress import IPv4Interface, IPv6Interface
from typing import TYPE_CHECKING

from netplug.net.link_addresses import holds

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

    def has_address(self, index: int, address: Interface) -> bool:
        """Whether this process put ``address`` on link ``index`` and that link
        still holds it with its prefix (asked of the kernel each time, as cheaply
        as it answers); a fact found wrong is dropped."""
        with self._lock:
            if (index, address) not in self._addresses:
                return False
        try:
            if holds(index, address):
                return True
        except OSError:  # no answer: adding it again is harmless (EEXIST), missing it is not
            pass
        self.forget_address(index, address)
        return False

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
