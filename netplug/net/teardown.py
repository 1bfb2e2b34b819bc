"""Deleting a container's interface: at once, or right after the reply.

Deleting a veth costs the kernel an RCU grace period, about 15 ms: most of a
DEL. The agent (``DeferredTeardown``) takes the interface down first (0.4 ms;
from then on it carries no traffic and answers no ARP), lets DEL answer, and
deletes the pair in a thread of its own. An ADD for the same namespace and
ifname waits for that deletion, so no CNI call can tell the difference. The
plugin's in-process fallback (``Teardown``) deletes at once: its process
ends with the call.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from netplug.net import links, netns
from netplug.net.rtnl import Rtnl

log = logging.getLogger(__name__)

SETTLE_TIMEOUT = 10.0


class Teardown:
    def delete(self, crt: Rtnl, netns_path: str, ifname: str) -> bool:
        """Delete ``ifname`` (and so its veth peer); whether there was one.
        ``crt`` is a channel in the namespace at ``netns_path``."""
        return links.delete(crt, ifname)

    def settle(self, netns_path: str, ifname: str) -> None:
        """Return once no deletion of ``ifname`` in ``netns_path`` is under way."""

    def close(self) -> None:
        """Finish what is under way."""


class DeferredTeardown(Teardown):
    def __init__(self, workers: int = 2) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="teardown")
        self._pending: dict[tuple[str, str], Future] = {}
        self._lock = threading.Lock()

    def delete(self, crt: Rtnl, netns_path: str, ifname: str) -> bool:
        index = netns.link_index(netns_path, ifname)
        if index is None:
            return False
        crt.set_up(index, False)
        # Opened now: the path may only resolve while the calling plugin lives.
        fd = netns.open_netns(netns_path)
        key = (netns_path, ifname)
        future = self._pool.submit(_delete_in, fd, index)
        with self._lock:
            self._pending[key] = future
        future.add_done_callback(lambda done: self._forget(key, done))
        return True

    def _forget(self, key: tuple[str, str], done: Future) -> None:
        with self._lock:
            if self._pending.get(key) is done:
                del self._pending[key]

    def settle(self, netns_path: str, ifname: str) -> None:
        with self._lock:
            future = self._pending.get((netns_path, ifname))
        if future is not None:
            future.exception(timeout=SETTLE_TIMEOUT)  # logged by _delete_in

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _delete_in(fd: int, index: int) -> None:
    try:
        with netns.channel(fd) as crt:
            crt.delete_link(index)
    except Exception as e:  # the namespace may have gone first: nothing is left then
        log.debug("deferred delete of link %d: %s", index, e)
    finally:
        os.close(fd)
