"""The agent's store view: one watch on a real SQLite store, fanned out to parts
that run under a real supervisor. A part is killed through the named seam
(``netplug.faults``) and comes back with a full view while the others keep being fed.
The waits are on the parts' own records (a condition), bounded in time."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from netplug import faults
from netplug.agent import store_view
from netplug.agent.carry_file import CarryFile
from netplug.agent.reset_carrier import SAVE_INTERVAL
from netplug.agent.reset_carry import RECOVER_GRACE
from netplug.agent.store_view import Delta, Feed, Full, InjectedFault, StoreView, Update, covering
from netplug.agent.supervisor import Backoff, Supervisor, overall
from netplug.ipam.identity import HostMemory
from netplug.ipam.schema import ROOT, Attachments, Blocks, Hosts, Identity, Names, Vteps
from netplug.ipam.store.base import KeyValue, Put, StoreCorrupt, StoreReset
from netplug.ipam.store.sqlite import SQLiteStore

from waiting import wait_for

QUICK = Backoff(initial=0.02, maximum=0.1, stable_after=0.5)
HOSTS, BLOCKS, NAMES = Hosts.PREFIX, Blocks.PREFIX, Names.PREFIX


class Recorder:
    """A part that keeps every update its feed brings, and each run's first one."""

    def __init__(self) -> None:
        self.updates: list[Update] = []
        self.runs = 0
        self._cond = threading.Condition()

    def follow(self, feed: Feed, stop: threading.Event) -> None:
        with self._cond:
            self.runs += 1
        while not stop.is_set():
            got = feed.take(stop, 5.0)
            with self._cond:
                self.updates.extend(got)
                self._cond.notify_all()

    def held(self) -> set[str]:
        """The keys the part holds now, replaying what it was fed."""
        held: dict = {}
        with self._cond:
            for update in self.updates:
                store_view.mirror(held, update)
        return set(held)

    def wait_for(self, check: Callable[[Recorder], bool], timeout: float = 5.0) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: check(self), timeout), self.updates


@pytest.fixture
def store(tmp_path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(str(tmp_path / "netplug.db"), poll_interval=0.002)
    yield s
    s.close()


class Agent:
    """A view and its parts under a supervisor, as netplugd wires them."""

    def __init__(self, store: SQLiteStore, trust=None, **view) -> None:
        self.statuses: list[bool] = []
        self._status = threading.Condition()
        self.view = StoreView(store, trust, on_status=self._on_status, **view)
        self.supervisor = Supervisor(QUICK)
        self.parts: dict[str, Recorder] = {}
        self.feeds: dict[str, Feed] = {}

    def part(self, name: str, *prefixes: str) -> Recorder:
        self.parts[name] = Recorder()
        self.feeds[name] = self.view.subscribe(name, prefixes)
        return self.parts[name]

    def _on_status(self, up: bool) -> None:
        with self._status:
            self.statuses.append(up)
            self._status.notify_all()

    def wait_for_status(self, up: bool, timeout: float = 5.0) -> None:
        with self._status:
            assert self._status.wait_for(lambda: self.statuses[-1:] == [up], timeout)

    def start(self) -> None:
        for name, part in self.parts.items():
            self.supervisor.start(name, self.feeds[name].runs(part.follow))
        self.supervisor.start("store-view", self.view.run)


@pytest.fixture
def agent(store) -> Iterator[Callable[..., Agent]]:
    made: list[Agent] = []

    def make(**kwargs) -> Agent:
        made.append(Agent(store, **kwargs))
        return made[-1]

    yield make
    for a in made:  # all first: a restarted agent's loops have its predecessor's names
        a.supervisor.stop(5)
    loops = {name for a in made for name in a.supervisor.health()}
    assert not [t for t in threading.enumerate() if t.name in loops], "a loop did not stop"


def test_each_part_gets_a_full_read_then_only_its_own_records(store, agent) -> None:
    store.put(Hosts.key("h1"), b"{}")
    store.put(f"{NAMES}api", b"{}")
    a = agent()
    overlay, dns, replay = a.part("overlay", HOSTS, BLOCKS), a.part("dns", NAMES), a.part("replay")
    a.start()
    for part in (overlay, dns, replay):
        part.wait_for(lambda p: len(p.updates) >= 1)
    assert overlay.held() == {Hosts.key("h1")}
    assert dns.held() == {f"{NAMES}api"}
    assert replay.updates == [Full(overlay.updates[0].revision, ())]
    assert a.statuses == [True]

    store.put(f"{ROOT}ips/blue/10.0.0.0/24/10.0.0.7", b"{}")  # nobody follows it
    store.put(f"{NAMES}db", b"{}")
    store.put(Hosts.key("h2"), b"{}")
    overlay.wait_for(lambda p: Hosts.key("h2") in p.held())
    dns.wait_for(lambda p: f"{NAMES}db" in p.held())
    assert overlay.held() == {Hosts.key("h1"), Hosts.key("h2")}
    assert all(isinstance(u, Delta) for u in overlay.updates[1:])
    store.delete(Hosts.key("h1"))
    overlay.wait_for(lambda p: p.held() == {Hosts.key("h2")})
    assert dns.held() == {f"{NAMES}api", f"{NAMES}db"}
    assert len(replay.updates) == 1  # deltas are not its business


def test_a_failing_part_is_restarted_with_a_full_view_while_the_others_are_fed(
    store, agent, monkeypatch
) -> None:
    faults.forget()
    monkeypatch.setenv(faults.ENV, "overlay*3")
    a = agent()
    overlay, dns = a.part("overlay", HOSTS), a.part("dns", NAMES)
    a.start()
    # Each restart takes a Full from the mirror, and fails on it again, 3 times.
    overlay.wait_for(lambda p: p.runs == 4 and p.updates)
    assert isinstance(overlay.updates[0], Full)
    health = a.supervisor.health()["overlay"]
    assert health["restarts"] == 3 and health["lastError"].startswith("InjectedFault: ")
    # Meanwhile and since, the other part is fed, and the view never restarted.
    store.put(f"{NAMES}api", b"{}")
    dns.wait_for(lambda p: f"{NAMES}api" in p.held())
    store.put(Hosts.key("h2"), b"{}")
    overlay.wait_for(lambda p: Hosts.key("h2") in p.held())
    assert dns.runs == 1 and a.supervisor.health()["store-view"]["restarts"] == 0


def test_a_part_that_stops_taking_is_not_fed_past_the_bound(store, agent, monkeypatch) -> None:
    """A stuck part costs one Full of memory, not every delta since it stuck."""
    monkeypatch.setattr(store_view, "FEED_BOUND", 3)
    a = agent()
    dns = a.part("dns", HOSTS)
    stuck = a.view.subscribe("stuck", (HOSTS,))  # nobody takes from it
    a.start()
    for i in range(6):
        store.put(Hosts.key(f"h{i}"), b"{}")
    dns.wait_for(lambda p: len(p.held()) == 6)
    got = stuck.take(threading.Event(), 0)
    assert isinstance(got[0], Full) and len(got) <= 3
    held: dict = {}
    for update in got:
        store_view.mirror(held, update)
    assert len(held) == 6


def test_the_view_stops_at_a_store_it_must_not_trust(store, agent) -> None:
    """A batch that changes the store's identity is checked before any part
    sees it: a reset store would otherwise take every peer and name along."""
    reset = threading.Event()

    def trust() -> None:
        if reset.is_set():
            raise StoreReset("the test reset it")

    a = agent(trust=trust)
    overlay = a.part("overlay", HOSTS)
    a.start()
    overlay.wait_for(lambda p: len(p.updates) == 1)
    reset.set()
    store.txn((), [Put(Identity.key(), b'{"id": "other"}'), Put(Hosts.key("x"), b"{}")])
    a.wait_for_status(False)
    assert overlay.held() == set()
    reset.clear()  # trusted again: the next full read brings the host
    overlay.wait_for(lambda p: p.held() == {Hosts.key("x")})
    a.wait_for_status(True)


@pytest.mark.parametrize(("error", "state"), [(StoreReset, "reset"), (StoreCorrupt, "corrupt")])
def test_a_refused_store_is_reported_with_its_fix_not_as_unreachable(
    store, agent, error, state
) -> None:
    """A reset (or corrupt) store is no outage that heals by itself: the view says
    which, with the message naming the fix, and the agent is degraded until it
    is trusted again; the parts keep what they hold meanwhile."""
    refused = threading.Event()

    def trust() -> None:
        if refused.is_set():
            raise error("the store was reset: run `netplugctl recover`")

    store.put(Hosts.key("h1"), b"{}")
    a = agent(trust=trust)
    overlay = a.part("overlay", HOSTS)
    a.start()
    overlay.wait_for(lambda p: p.held() == {Hosts.key("h1")})
    assert a.view.health() == {"state": "up"}
    refused.set()
    store.txn((), [Put(Identity.key(), b'{"id": "other"}')])
    a.wait_for_status(False)
    health = a.view.health()
    assert health == {"state": state, "error": "the store was reset: run `netplugctl recover`"}
    assert overall(a.supervisor.health(), store_refused="error" in health) == "degraded"
    assert overlay.held() == {Hosts.key("h1")}
    refused.clear()  # recovered
    a.wait_for_status(True)
    assert a.view.health() == {"state": "up"}


H1, H2 = Hosts.key("h1"), Hosts.key("h2")
VTEP2 = Vteps.key("blue", "h2")
WEB2 = Attachments.key("blue", "h2", "web", "eth0")  # recovered by h2
GONE2 = Attachments.key("blue", "h2", "gone", "eth0")  # died while the store was reset


def delta_keys(update: Update) -> set[str]:
    return {e.kv.key for e in update.events} if isinstance(update, Delta) else set()


def reset_then_recover_h1(
    store, agent, host="h1", extra: tuple[str, ...] = (), **view
) -> tuple[Agent, Recorder]:
    """An agent of h1 following hosts, VTEPs and attachments of h1 and h2; the
    store emptied under it (refused), then h1's records written back (h1
    recovered, and its agent registered again) and followed again."""
    refused = threading.Event()

    def trust() -> None:
        if refused.is_set():
            raise StoreReset("reset")

    a = agent(trust=trust, host=host, **view)
    part = a.part("parts", HOSTS, Vteps.PREFIX, Attachments.PREFIX)
    for key in (H1, H2, VTEP2, WEB2, GONE2, Vteps.key("blue", "h1"), *extra):
        store.put(key, b"{}")
    a.start()
    part.wait_for(lambda p: len(p.held()) == 6 + len(extra))
    refused.set()
    store.txn((), [Put(Identity.key(), b'{"id": "other"}')])
    a.wait_for_status(False)
    store.delete("/netplug/", prefix=True)
    store.put(Vteps.key("blue", "h1"), b"{}")
    store.put(H1, b"{}")
    refused.clear()
    a.wait_for_status(True)
    return a, part


def test_the_records_of_hosts_not_recovered_are_carried_until_their_agent_registers(
    store, agent
) -> None:
    """After a reset the store gets each host's records back only when that host
    recovers: the view carries them meanwhile (the parts keep peers, names and
    set elements), each until the store writes its key, a host's until its agent
    registers (then what its recover did not write back goes)."""
    a, part = reset_then_recover_h1(store, agent)
    mine = {H1, Vteps.key("blue", "h1")}
    part.wait_for(lambda p: p.held() == mine | {H2, VTEP2, WEB2, GONE2})
    assert a.view.health()["carried"] == {"h2": 4}
    store.put(VTEP2, b'{"new": 1}')  # h2 recovers: the store's record, not the carried one
    store.put(WEB2, b"{}")
    part.wait_for(lambda p: any(WEB2 in delta_keys(u) for u in p.updates))
    assert part.held() == mine | {H2, VTEP2, WEB2, GONE2}
    assert a.view.health()["carried"] == {"h2": 2}  # its host record, and gone
    store.put(H2, b"{}")  # h2's agent registered: what it did not write back is gone
    part.wait_for(lambda p: p.held() == mine | {H2, VTEP2, WEB2})
    assert "carried" not in a.view.health()


def test_the_records_of_a_host_that_never_recovers_go_when_the_grace_ends(store, agent) -> None:
    a, part = reset_then_recover_h1(store, agent, recover_grace=0.5)
    mine = {H1, Vteps.key("blue", "h1")}
    part.wait_for(lambda p: p.held() == mine | {H2, VTEP2, WEB2, GONE2})
    part.wait_for(lambda p: p.held() == mine, timeout=5)
    assert "carried" not in a.view.health()


def test_a_host_without_a_host_record_is_carried_until_its_records_are_back(
    store, agent, caplog
) -> None:
    """A host that ran no agent, or had died: no registration ends its carry, the
    last of its records written back does (the grace would, else)."""
    vtep3 = Vteps.key("blue", "h3")
    a, part = reset_then_recover_h1(store, agent, extra=(vtep3,), recover_grace=0.5)
    assert a.view.health()["carried"] == {"h2": 4, "h3": 1}
    store.put(vtep3, b"{}")
    part.wait_for(lambda p: any(vtep3 in delta_keys(u) for u in p.updates))
    assert a.view.health()["carried"] == {"h2": 4}
    part.wait_for(lambda p: p.held() == {H1, Vteps.key("blue", "h1"), vtep3}, timeout=5)
    assert "dropping the records of the hosts that did not recover" in caplog.text
    assert a.supervisor.health()["store-view"]["restarts"] == 0


def test_a_view_without_a_host_carries_nothing(store, agent) -> None:
    """netplug-dns and the tests' views: a reset store is followed as it is."""
    _, part = reset_then_recover_h1(store, agent, host=None)
    part.wait_for(lambda p: p.held() == {H1, Vteps.key("blue", "h1")})


# -- the carry kept on the host: an agent restarted while the hosts recover -------------


@pytest.fixture
def carry_file(tmp_path, store) -> CarryFile:
    return CarryFile(HostMemory(str(tmp_path / "run"), "h1", store.url))


def restarted(agent, old: Agent, carry_file: CarryFile, **view) -> tuple[Agent, Recorder]:
    """``old`` stopped, and a new agent of h1 (on a store it trusts) started."""
    old.supervisor.stop(5)
    a = agent(host="h1", carry_file=carry_file, **view)
    part = a.part("parts", HOSTS, Vteps.PREFIX, Attachments.PREFIX)
    a.start()
    a.wait_for_status(True)
    return a, part


def test_an_agent_restarted_while_hosts_recover_carries_on(store, agent, carry_file) -> None:
    """The carry lived in the agent's memory only: an agent restarted while h2 had
    not recovered yet (a crash, an upgrade) dropped h2's peers, names and set
    elements. It carries on from the saved carry, with the grace it had left."""
    old, _ = reset_then_recover_h1(store, agent, carry_file=carry_file)
    assert old.view.health()["carried"] == {"h2": 4}
    store.put(WEB2, b"{}")  # h2's recover has begun
    a, part = restarted(agent, old, carry_file)
    mine = {H1, Vteps.key("blue", "h1")}
    part.wait_for(lambda p: p.held() == mine | {H2, VTEP2, WEB2, GONE2})
    health = a.view.health()
    assert health["carried"] == {"h2": 3} and 0 < health["carriedFor"] <= RECOVER_GRACE
    store.put(H2, b"{}")  # h2's agent registered: its carry ends, and the file goes
    part.wait_for(lambda p: p.held() == mine | {H2, WEB2})
    assert wait_for(lambda: carry_file.load() is None, SAVE_INTERVAL + 2)


def test_an_agent_restarted_before_its_host_recovered_carries_from_its_last_read(
    store, agent, carry_file
) -> None:
    """Saved when the view first found the store reset: the agent that starts once
    the host has recovered has no read of its own from before the reset."""
    refused = threading.Event()

    def trust() -> None:
        if refused.is_set():
            raise StoreReset("reset")

    old = agent(trust=trust, host="h1", carry_file=carry_file)
    old.part("parts", HOSTS, Vteps.PREFIX)
    for key in (H1, H2, VTEP2):
        store.put(key, b"{}")
    old.start()
    old.wait_for_status(True)
    refused.set()
    store.txn((), [Put(Identity.key(), b'{"id": "other"}')])
    old.wait_for_status(False)
    store.delete("/netplug/", prefix=True)
    store.put(H1, b"{}")  # recovered while no agent ran
    a, part = restarted(agent, old, carry_file)
    part.wait_for(lambda p: p.held() == {H1, H2, VTEP2})
    assert a.view.health()["carried"] == {"h2": 2}


def test_a_saved_carry_whose_grace_ran_out_is_dropped(store, agent, carry_file) -> None:
    store.put(H1, b"{}")
    carry_file.save({VTEP2: KeyValue(VTEP2, b"{}", 1, 1, 1)}, since=time.time() - 11)
    a, part = restarted(agent, agent(), carry_file, recover_grace=10)
    part.wait_for(lambda p: p.held() == {H1})
    assert "carried" not in a.view.health() and carry_file.load() is None


def test_a_saved_carry_that_does_not_read_is_dropped(carry_file, caplog) -> None:
    carry_file.save({})
    carry_file.path.write_text('{"records": [["only a key"]]}')
    assert carry_file.load() is None and not carry_file.path.exists()
    assert "ignoring the unreadable carry of a store reset" in caplog.text


@pytest.mark.parametrize(
    ("spec", "fails"),
    [("overlay*2", 2), ("overlay*0", 0), ("overlay", 5), ("masq, overlay*1:bug", 1)],
)
def test_a_counted_point_fails_its_first_visits(monkeypatch, spec, fails) -> None:
    faults.forget()
    monkeypatch.setenv(faults.ENV, spec)
    failed = 0
    for _ in range(5):
        try:
            faults.check("overlay", InjectedFault)
        except RuntimeError:  # InjectedFault, or RuntimeError for :bug
            failed += 1
    assert failed == fails
    faults.check("dns-registry", InjectedFault)  # not named


def test_a_malformed_count_is_refused(monkeypatch) -> None:
    monkeypatch.setenv(faults.ENV, "overlay*x")
    with pytest.raises(ValueError, match=faults.ENV):
        faults.check("overlay", InjectedFault)


def test_a_prefix_under_another_is_not_read_twice() -> None:
    hosts, mine = "/netplug/hosts/", "/netplug/hosts/h1"
    assert covering([mine, "/netplug/vteps/", hosts, hosts]) == (hosts, "/netplug/vteps/")
    assert covering([mine, "/netplug/hosts/h10"]) == (mine,)  # h10's key is under h1's
    assert covering([]) == ()
