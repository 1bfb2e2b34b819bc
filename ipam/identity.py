"""The store's identity, and each host's memory of it: a reset store is refused.

A store that was emptied (a truncated SQLite file, a wiped etcd) or replaced
by another looks like a fresh one to the IPAM, which would then hand out the
addresses of containers that still run. So every store carries a random ID,
written once under ``schema.Identity.key()``, and each host remembers the ID it
used, in a small file under its runDir (one per store URL and host name). A
call against a store whose ID is missing, or differs from the remembered one,
is refused with ``StoreReset`` before anything changes; ``netplugctl recover``
rebuilds the host's records from its interfaces and adopts the store's ID.

A host that remembers nothing (its first call, or a runDir emptied by a reboot,
which took its containers along) adopts the store's ID, writing one when the
store has none: that is also how a store written before identities existed
gets one. A memory file that exists but cannot be read is not "nothing": the
host cannot tell whether the store is the one it used, so the call is refused
(StoreReset) until ``netplugctl recover`` writes the file anew.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from netplug.ipam.schema import Identity
from netplug.ipam.store.base import Compare, Put, Store, StoreReset, StoreUnavailable

log = logging.getLogger(__name__)


class Verdict(Enum):
    SAME = "same"  # the store is the one this host remembers
    ADOPT = "adopt"  # the host remembers none: remember the store's
    CREATE = "create"  # neither has one: give the store an ID, then adopt it
    RESET = "reset"  # the host remembers an ID the store lacks: emptied
    REPLACED = "replaced"  # the store has another ID: another store


def judge(stored: str | None, remembered: str | None) -> Verdict:
    """What to do with a store whose ID is ``stored`` on a host that remembers
    ``remembered`` (pure; None: no ID)."""
    if remembered is None:
        return Verdict.CREATE if stored is None else Verdict.ADOPT
    if stored is None:
        return Verdict.RESET
    return Verdict.SAME if stored == remembered else Verdict.REPLACED


@dataclass(frozen=True, slots=True)
class HostMemory:
    """The store ID a host last used with ``store_url``, kept under its runDir."""

    run_dir: str
    host: str
    store_url: str

    @property
    def path(self) -> Path:
        return self.beside("store")

    def beside(self, kind: str) -> Path:
        """The host's file of ``kind`` for this store: ``<runDir>/<host>/<kind>-<hash>.json``."""
        import hashlib  # lazily: netplug-ipam's start-up path rarely needs it

        # Hashed: a URL holds slashes and colons; one file per store a host uses.
        digest = hashlib.sha1(self.store_url.encode(), usedforsecurity=False).hexdigest()[:16]
        return Path(self.run_dir) / self.host / f"{kind}-{digest}.json"

    def read(self) -> str | None:
        """The remembered ID; None when there is no file. Raises StoreReset when
        the file exists but holds no ID: adopting whatever store answers then
        could accept a replaced one (the file is only ever replaced whole, so
        this is damage, not a write in progress)."""
        try:
            record = json.loads(self.path.read_bytes())
            return str(record["id"])
        except (FileNotFoundError, NotADirectoryError):  # the latter: runDir is no directory
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise StoreReset(
                f"cannot tell which store host {self.host} last used: its memory "
                f"{self.path} is unreadable ({e}). Nothing was changed. Rebuild this "
                f"host's records from its interfaces with `{recover_command(self)}`, "
                "which writes the file anew"
            ) from e

    def write(self, store_id: str) -> None:
        """Remember ``store_id`` (atomically: a temporary file renamed over the old)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = {"store": self.store_url, "host": self.host, "id": store_id}
        # The native thread ID: unique across processes and an agent's threads.
        tmp = self.path.with_name(f".{self.path.name}.{threading.get_native_id()}")
        tmp.write_text(json.dumps(record) + "\n")
        os.replace(tmp, self.path)


def store_id(store: Store) -> str | None:
    kv = store.get(Identity.key())
    return None if kv is None else Identity.decode(kv.value)


def _read_id(store: Store) -> str | None:
    try:
        return store_id(store)
    except StoreReset:
        return store_id(store)


def ensure_store_id(store: Store) -> str:
    """The store's ID, written first when it has none (the first writer's wins)."""
    key = Identity.key()
    fresh = Identity.encode(os.urandom(16).hex())
    store.txn([Compare.absent(key)], [Put(key, fresh)])
    found = store_id(store)
    assert found is not None, "the identity key vanished right after it was written"
    return found


def recover_command(memory: HostMemory) -> str:
    return (
        f"netplugctl --store {memory.store_url} --host-name {memory.host} "
        f"recover --run-dir {memory.run_dir}"
    )


def check(store: Store, memory: HostMemory) -> bool:
    """Refuse a store this host does not know (StoreReset); whether the host has yet
    to adopt it (``adopt``, once the call has changed something). Writes nothing.

    A store that cannot be read right now (down, or corrupt) is let through:
    the command meets the failure itself, and a DEL then still removes the
    interfaces and defers the release. A StoreReset from the store is raised,
    unless reading again works: the store let go of a file that changed (the
    SQLite store raises once per thread that held it), and as this runs before
    the call changes anything, the file there now is the one to judge.

    The memory is read before the store: another process's first call may
    adopt the store meanwhile, and it writes the store's ID before its memory,
    so a memory read first never holds an ID the store read after lacks.
    """
    remembered = memory.read()
    try:
        stored = _read_id(store)
    except StoreReset:
        raise
    except StoreUnavailable:
        return False
    verdict = judge(stored, remembered)
    if verdict in (Verdict.RESET, Verdict.REPLACED):
        raise StoreReset(_refusal(verdict, stored, remembered, memory))
    return verdict is not Verdict.SAME


def adopt(store: Store, memory: HostMemory) -> str:
    """Remember the store's ID (giving the store one when it has none); returns it."""
    stored = ensure_store_id(store)
    memory.write(stored)
    log.info("host %s uses store %s (ID %s)", memory.host, memory.store_url, stored)
    return stored


def verify(store: Store, memory: HostMemory) -> None:
    """``check``, then ``adopt`` when the host knows no store yet."""
    if check(store, memory):
        adopt(store, memory)


def _refusal(verdict: Verdict, stored: str | None, remembered: str | None, m: HostMemory) -> str:
    what = (
        "has no identity: it was emptied"
        if verdict is Verdict.RESET
        else f"has ID {stored}: it was replaced by another store"
    )
    return (
        f"store was reset or replaced: {m.store_url} {what}, but host {m.host} last used "
        f"store ID {remembered} (remembered in {m.path}). Nothing was changed: new "
        "containers would get the addresses of running ones. Rebuild this host's records "
        f"from its interfaces with `{recover_command(m)}`"
    )
