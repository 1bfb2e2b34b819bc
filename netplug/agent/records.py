"""The store records the agent's parts read (hosts, VTEPs, blocks), parsed one
at a time through the store schema, so that one malformed record (the
schema's ``SchemaError``) is skipped and reported, not fatal to a whole view.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from netplug.agent.overlay_plan import Vtep
from netplug.ipam.blocks import Network
from netplug.ipam.schema import Blocks, Hosts, SchemaError, Vteps
from netplug.ipam.store.base import KeyValue

log = logging.getLogger(__name__)

HOSTS, VTEPS, BLOCKS = Hosts.PREFIX, Vteps.PREFIX, Blocks.PREFIX

T = TypeVar("T")
Bad = dict[str, tuple[int, str]]  # key -> (the record's mod revision, why it is unreadable)


def host(kv: KeyValue) -> str:
    return Hosts.parse(kv.key)


def vtep(kv: KeyValue) -> Vtep:
    network, name = Vteps.parse(kv.key)
    return Vtep(network, name, *Vteps.decode(kv.value))


def block(kv: KeyValue) -> tuple[str, Network, str]:
    """(network, block, the host that holds it)."""
    network, cidr = Blocks.parse(kv.key)
    return network, cidr, Blocks.decode(kv.value)


def readable(kvs: Iterable[KeyValue], parse: Callable[[KeyValue], T], bad: Bad) -> Iterator[T]:
    """``parse`` of each record that parses; the others go into ``bad``."""
    for kv in kvs:
        try:
            yield parse(kv)
        except SchemaError as e:
            bad[kv.key] = (kv.mod_revision, f"{type(e).__name__}: {e}")


def blocks_by_network(kvs: Iterable[KeyValue], bad: Bad) -> dict[str, dict[Network, str]]:
    """network -> block -> the host that holds it, of the block records in ``kvs``."""
    held: dict[str, dict[Network, str]] = {}
    for network, cidr, owner in readable(kvs, block, bad):
        held.setdefault(network, {})[cidr] = owner
    return held


class BadRecords:
    """The records each part skips: each version logged and counted once, the
    current ones reported in health (until they are fixed or deleted)."""

    def __init__(self, count: Callable[[str], None] | None = None) -> None:
        self._count = count  # told the part's name once per newly seen bad record
        self._lock = threading.Lock()
        self._by_part: dict[str, Bad] = {}

    def report(self, part: str, bad: Bad) -> None:
        """What ``part`` skips now (all of it: what is missing was fixed)."""
        with self._lock:
            before = self._by_part.get(part, {})
            self._by_part[part] = dict(bad)
        for key, (revision, error) in bad.items():
            if before.get(key, (None, ""))[0] != revision:
                log.warning("%s: skipping unreadable record %s: %s", part, key, error)
                if self._count is not None:
                    self._count(part)

    def health(self) -> list[dict]:
        with self._lock:
            parts = sorted(self._by_part.items())
        return [
            {"part": part, "key": key, "error": error}
            for part, bad in parts
            for key, (_, error) in sorted(bad.items())
        ]
