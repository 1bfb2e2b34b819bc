"""IPAM's block view: a store read racing a ``forget``, a claim or a release is
used by its caller but never kept (threads, ordered by events: deterministic)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from ipaddress import ip_address, ip_network

import pytest
from meddling import BehindTheBack

from netplug.ipam.allocations import IPAM, Pool
from netplug.ipam.block_view import BlockView, Used
from netplug.ipam.schema import Ips

BLOCK = ip_network("10.244.1.0/24")
A1, A2 = ip_address("10.244.1.2"), ip_address("10.244.1.3")
WAIT = 5.0


class SlowRead:
    """A store read that returns ``result`` once the test lets it go."""

    def __init__(self, result: Used) -> None:
        self.result = result
        self.begun = threading.Event()
        self.go = threading.Event()

    def __call__(self) -> Used:
        self.begun.set()
        assert self.go.wait(WAIT)
        return self.result


def read_racing(view: BlockView, meanwhile: Callable[[], object]) -> Used:
    """``view.used`` in a thread whose store read ``meanwhile`` overtakes."""
    slow = SlowRead(frozenset({A1}))
    got: list[Used] = []
    reader = threading.Thread(target=lambda: got.append(view.used("blue", BLOCK, slow)))
    reader.start()
    try:
        assert slow.begun.wait(WAIT)
        meanwhile()
    finally:
        slow.go.set()
        reader.join(WAIT)
    assert not reader.is_alive()
    return got[0]


def fresh(result: Used) -> Callable[[], Used]:
    return lambda: result


@pytest.mark.parametrize(
    "meanwhile",
    [
        lambda view: view.forget(),
        lambda view: view.note("blue", BLOCK, A2, True),  # a claim: the read may lack it
        lambda view: view.note("blue", BLOCK, A1, False),  # a release: the read may hold it
    ],
    ids=["forget", "claim", "release"],
)
def test_a_read_overtaken_by_a_change_is_used_but_not_kept(meanwhile):
    view = BlockView()
    assert read_racing(view, lambda: meanwhile(view)) == {A1}  # the caller still uses it
    assert view.used("blue", BLOCK, fresh(frozenset({A2}))) == {A2}  # read again
    assert view.used("blue", BLOCK, fresh(frozenset())) == {A2}  # and now kept


def test_a_read_in_another_block_is_kept():
    view = BlockView()
    other = ip_network("10.244.2.0/24")
    read_racing(view, lambda: view.note("blue", other, ip_address("10.244.2.2"), True))
    assert view.used("blue", BLOCK, fresh(frozenset())) == {A1}


def test_claims_and_releases_update_a_kept_block():
    view = BlockView()
    view.used("blue", BLOCK, fresh(frozenset({A1})))
    view.note("blue", BLOCK, A2, True)
    view.note("blue", BLOCK, A1, False)
    assert view.used("blue", BLOCK, fresh(frozenset())) == {A2}
    assert view.knows_any()


def test_forget_drops_hints_and_blocks():
    view = BlockView()
    view.set_hint("blue", BLOCK)
    view.used("blue", BLOCK, fresh(frozenset({A1})))
    view.forget()
    assert view.hint("blue", 4) is None
    assert not view.knows_any()


class CountingClaims:
    """The store, counting the claims (transactions) that fail."""

    def __init__(self, store) -> None:
        self._store = store
        self.failed = 0

    def txn(self, *args, **kw):
        result = self._store.txn(*args, **kw)
        self.failed += not result.succeeded
        return result

    def __getattr__(self, name):
        return getattr(self._store, name)


def test_a_claim_made_during_another_threads_read_stays_in_the_view(store):
    """Another worker claims an address while this one reads the block: the
    read (which lacks that claim) must not replace the view that has it, or a
    later ADD picks the taken address and its claim fails."""
    pool = Pool(ip_network("10.9.0.0/24"), 29)  # 5 container addresses per block
    counting = CountingClaims(store)
    IPAM(store, "node-1").allocate("tiny", [pool], "c0", "eth0")
    ipam = IPAM(counting, "node-1")  # knows nothing yet: its next ADD reads the block
    prefix = Ips.block_prefix("tiny", ipam.host_blocks("tiny", pool)[0])

    def claim_meanwhile() -> None:
        ipam.allocate("tiny", [pool], "c1", "eth0")

    ipam.store = BehindTheBack(counting, prefix, claim_meanwhile)
    ipam.allocate("tiny", [pool], "c2", "eth0")
    ipam.store = counting
    for i in range(3, 5):  # fill the block: every claim must succeed first time
        ipam.allocate("tiny", [pool], f"c{i}", "eth0")
    assert counting.failed == 0
