"""The store's identity and the host's memory of it, on both backends: a store that
was emptied or replaced is refused and left unchanged; a host that remembers
nothing adopts the store's identity."""

from __future__ import annotations

import pytest

from netplug.ipam import identity
from netplug.ipam.identity import HostMemory, Verdict, judge
from netplug.ipam.schema import ROOT, Identity
from netplug.ipam.store.base import StoreReset


@pytest.mark.parametrize(
    ("stored", "remembered", "verdict"),
    [
        (None, None, Verdict.CREATE),
        ("a", None, Verdict.ADOPT),
        ("a", "a", Verdict.SAME),
        (None, "a", Verdict.RESET),
        ("b", "a", Verdict.REPLACED),
    ],
)
def test_judge(stored, remembered, verdict) -> None:
    assert judge(stored, remembered) is verdict


@pytest.fixture
def memory(store, tmp_path) -> HostMemory:
    return HostMemory(str(tmp_path / "run"), "node-1", store.url)


def test_first_use_gives_the_store_an_identity_and_remembers_it(store, memory) -> None:
    identity.verify(store, memory)
    stored = identity.store_id(store)
    assert stored is not None and memory.read() == stored
    revision = store.status()
    identity.verify(store, memory)  # known store: nothing written
    assert store.status() == revision


def test_an_emptied_store_is_refused_and_left_empty(store, memory) -> None:
    identity.verify(store, memory)
    store.delete(ROOT, prefix=True)
    with pytest.raises(StoreReset, match=r"was emptied.*netplugctl .*recover --run-dir"):
        identity.verify(store, memory)
    assert store.range(ROOT, prefix=True).kvs == []


def test_a_replaced_store_is_refused(store, memory) -> None:
    identity.verify(store, memory)
    remembered = memory.read()
    store.put(Identity.key(), Identity.encode("another"))
    with pytest.raises(StoreReset, match=rf"has ID another.*last used store ID {remembered}"):
        identity.verify(store, memory)
    assert memory.read() == remembered


def test_a_host_without_memory_adopts_the_stores_identity(store, memory, tmp_path) -> None:
    identity.verify(store, memory)
    other = HostMemory(str(tmp_path / "run2"), "node-2", store.url)
    identity.verify(store, other)
    assert other.read() == memory.read()


def test_the_first_identity_written_wins(store) -> None:
    first = identity.ensure_store_id(store)
    assert identity.ensure_store_id(store) == first == identity.store_id(store)


def test_memory_is_per_store_url_and_host(tmp_path) -> None:
    paths = {
        HostMemory(str(tmp_path), host, url).path
        for host in ("a", "b")
        for url in ("sqlite:///x.db", "etcd://h:2379")
    }
    assert len(paths) == 4


@pytest.mark.parametrize("content", [b"", b"{not json", b'{"store": "x"}', b"[1]"])
def test_an_unreadable_memory_refuses_the_store_until_recover(store, memory, content) -> None:
    identity.verify(store, memory)
    memory.path.write_bytes(content)
    store.put(Identity.key(), Identity.encode("another"))  # a replaced store
    with pytest.raises(StoreReset, match=rf"{memory.path} is unreadable.*recover --run-dir"):
        identity.verify(store, memory)
    assert memory.path.read_bytes() == content  # nothing adopted
    assert identity.store_id(store) == "another"
    identity.adopt(store, memory)  # what recover ends with
    assert memory.read() == "another"


class AdoptedMeanwhile:
    """The store, except that right after this process reads the store's ID,
    another process's first call on the same host adopts the store (writes
    its ID, then its memory): 100 parallel first ADDs do this."""

    def __init__(self, store, memory: HostMemory) -> None:
        self._store, self._memory, self._done = store, memory, False

    def get(self, key):
        kv = self._store.get(key)
        if key == Identity.key() and not self._done:
            self._done = True
            identity.adopt(self._store, self._memory)
        return kv

    def __getattr__(self, name):
        return getattr(self._store, name)


def test_a_first_call_racing_another_hosts_first_adoption_is_not_refused(store, memory) -> None:
    assert identity.check(AdoptedMeanwhile(store, memory), memory) is True  # adopt after
    assert identity.store_id(store) == memory.read()
