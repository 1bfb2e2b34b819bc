"""What one IPAM last saw of its host's blocks, shared by the agent's workers.

Two facts per network: the block that last had room (the hint, so that an ADD
need not list every block), and the addresses in use in each block (so that
a long-lived agent does not read a block's every address, up to 253 keys, on
each ADD). Stale is safe: a claim compares each address absent and the block
still this host's, and a failed claim or a block that looks full calls
``forget``. Every read and write holds the one lock that ``forget`` holds,
and a store read that began before a ``forget`` (or before a claim or
release in its block) is used by its caller but never kept: it would bring
back what was just cleared.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from netplug.ipam.blocks import Address, Network

Used = frozenset[Address]


class BlockView:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hint: dict[tuple[str, int], Network] = {}
        self._used: dict[tuple[str, Network], Used] = {}
        self._epoch = 0  # counts forget()
        self._changes: dict[tuple[str, Network], int] = {}  # claims and releases per block

    def hint(self, network: str, version: int) -> Network | None:
        with self._lock:
            return self._hint.get((network, version))

    def set_hint(self, network: str, block: Network) -> None:
        with self._lock:
            self._hint[network, block.version] = block

    def knows_any(self) -> bool:
        """Whether any block's addresses are remembered (else ``forget`` changes nothing)."""
        with self._lock:
            return bool(self._used)

    def used(self, network: str, block: Network, read: Callable[[], Used]) -> Used:
        """The addresses in use in ``block`` as remembered, else ``read()`` from the
        store (outside the lock: a store read must not hold up the other workers)
        and remembered unless the view changed meanwhile."""
        key = (network, block)
        with self._lock:
            seen = self._used.get(key)
            if seen is not None:
                return seen
            before = self._stamp(key)
        return self.keep(network, block, read(), before)

    def stamp(self, network: str, block: Network) -> tuple[int, int]:
        """Taken before a store read whose result is to be ``keep``-t."""
        with self._lock:
            return self._stamp((network, block))

    def keep(self, network: str, block: Network, used: Used, stamp: tuple[int, int]) -> Used:
        """Remember ``used``, read after ``stamp``, unless a ``forget``, claim or
        release came since (the read may predate them); returns ``used``."""
        key = (network, block)
        with self._lock:
            if self._stamp(key) == stamp:
                self._used[key] = used
        return used

    def note(self, network: str, block: Network, address: Address, in_use: bool) -> None:
        """This IPAM claimed (``in_use``) or released ``address``."""
        key = (network, block)
        with self._lock:
            self._changes[key] = self._changes.get(key, 0) + 1
            seen = self._used.get(key)
            if seen is not None:
                change = frozenset((address,))
                self._used[key] = seen | change if in_use else seen - change

    def forget(self) -> None:
        """Drop every hint and block: the next ADD reads the store afresh."""
        with self._lock:
            self._epoch += 1
            self._hint.clear()
            self._used.clear()
            self._changes.clear()

    def _stamp(self, key: tuple[str, Network]) -> tuple[int, int]:
        return (self._epoch, self._changes.get(key, 0))
