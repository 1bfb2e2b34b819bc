"""The agent's enforcer: netplug's nftables table kept equal to the store.

A store view part (``follow``) fed the networks, attachments and policies.
Its first full feed (and every later one: a restart of the part, the store
back after an outage) reads what the kernel holds (``from_listing``) and
applies only the difference, so an agent restart opens nothing and closes
nothing (Felix's mark and sweep). Then each batch of events costs one ``nft``
batch: set elements only when just containers came or went (``Plan.elements``
against the plan compiled last), every chain rewritten in place when a policy
or a network changed. A host with no local network that needs the table has
none; an agent keeps the table it programmed after the host's last such
container goes, while any network is isolated or governed.

ADD and DEL reach it through ``Host.enforcer`` (``cover``/``uncover``, from the
plugin server's threads): the container's elements are programmed before ADD
answers, whether or not the feed has brought its records yet; a container
ADD covered stays covered until DEL or until the feed has its record.

When a remote container's address leaves a set, or changes owner in one, under
the same rules, its conntrack entries are deleted (``forget``: the agent's
``net.conntrack.Deleter``), so that no connection keeps the old verdict; a
local container's are its DEL's to delete.

It reports (``state``, and ``on_report`` at each change): the policy revision
in force, how long the last policy change took from its arrival to ``nft``
having applied it, and while ``nft`` keeps refusing the table, that it is
failing, with the error; it then retries with backoff (``enforcement``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from ipaddress import ip_address

from netplug.agent.containers import Containers
from netplug.agent.enforcement import Enforcement, Progress
from netplug.agent.records import BadRecords
from netplug.agent.store_view import Feed, Full, Update
from netplug.cni import segmentation
from netplug.cni.segmentation import Inputs
from netplug.ipam.schema import PolicyDeleted
from netplug.ipam.store.base import Event
from netplug.net import NetError, policy_table
from netplug.policy import departures
from netplug.policy.fill import Fill, Shares
from netplug.policy.plan import (
    Address,
    Dataplane,
    Endpoint,
    NetworkInfo,
    add_elements,
    compile_plan,
)

log = logging.getLogger(__name__)

PART = "enforcer"
WATCHED = (*segmentation.WATCHED, PolicyDeleted.KEY)  # the latter: the policy revision
IDLE = 3600.0  # seconds the part waits on its feed when nothing failed

# Told the new state at each change, and the seconds a policy change took to be
# in force when one just was (else None).
OnReport = Callable[[Enforcement, float | None], None]
# Deletes the conntrack entries of addresses (``net.conntrack``), saying why.
Forget = Callable[[list[Address], str], None]


class Enforcer:
    def __init__(
        self,
        host: str,
        read_store: Callable[[], Inputs],
        bad_records: BadRecords | None = None,
        on_report: OnReport | None = None,
        *,
        forget: Forget,
    ) -> None:
        self.me = host
        self._forget = forget  # conntrack entries of departed addresses (``_forget_departed``)
        self.state = Enforcement()  # swapped whole by the feed loop; read by anyone
        self._on_report = on_report
        self._read_store = read_store  # before the first feed: ADD reads the store itself
        self.bad_records = bad_records or BadRecords()
        self._lock = threading.Lock()  # the state below and the kernel's table
        self._containers = Containers(host)  # the feed's, ADD's and DEL's
        self._fill: Fill | None = None  # the plan, filled with the containers
        self._plan_of: tuple | None = None  # the (policies, networks) it was compiled from
        # Containers changed since the fill last saw them (None: any; see ``_filled``).
        self._unfilled: set[str] | None = None
        self._programmed: Dataplane | None = None  # what the table holds, None: no table
        self._known = False  # whether _programmed is known (else the kernel is read)
        # The (plan inputs, containers' version) _programmed holds, while _known: a
        # batch of store events that brings what ADD or DEL already did costs no
        # fill or diff.
        self._programmed_from: tuple | None = None
        # Whether this enforcer programmed a table: it keeps it when the host's last
        # container that needs it goes, while a network is isolated or governed
        # anywhere. Removing it made the next ADD write every set and chain again
        # (2.5 ms of the agent's CPU, against one container's elements); the table
        # is shared, as the bridge is, and its rules are the same on every host:
        # with no container here they judge nothing otherwise than the
        # containers' own hosts do. One read back at a start goes, as before.
        self._made = False

    # -- the feed --------------------------------------------------------------------

    def follow(self, feed: Feed, stop: threading.Event) -> None:
        """Keep the table equal to the feed's records (a store view part)."""
        progress = Progress()  # the policy revision fed, and when a change came
        reader = segmentation.Reader()  # decodes the records that changed only
        fed: Inputs | None = None  # None: no full read yet
        pending, wait = False, IDLE
        while not stop.is_set():
            updates = feed.take(stop, wait)
            progress.take(updates)
            fed = self._read(reader, updates, fed)
            pending = pending or bool(updates)
            if fed is None or not pending or stop.is_set():
                continue
            try:
                self.sync(fed)
                pending, wait = False, IDLE
                took = progress.enforced(time.monotonic())
                self._report(self.state.enforced(progress.revision), took)
            except NetError as e:
                with self._lock:
                    self._known = False
                self._report(self.state.failed(time.monotonic(), str(e)))
                wait = self.state.retry_delay()
                log.warning(
                    "enforcer: policy revision %d not in force (%d attempt(s)): %s; "
                    "retrying in %.1f s",
                    progress.revision,
                    self.state.failures,
                    e,
                    wait,
                )

    def _read(
        self, reader: segmentation.Reader, updates: list[Update], fed: Inputs | None
    ) -> Inputs | None:
        """The feed's records after ``updates``: a full read decodes them anew (and
        makes the kernel's table be read back), a batch applies just its events."""
        events: list[Event] = []
        for update in updates:
            if isinstance(update, Full):
                fed, events = reader.inputs(update.kvs), []
                with self._lock:
                    self._known = False  # a full read: mark and sweep the kernel's
            else:
                events += update.events
        return reader.apply(events) if events and fed is not None else fed

    def health(self) -> dict:
        """The state as /healthz and ``netplugctl status`` show it (``Enforcement.report``)."""
        return self.state.report(time.monotonic())

    def _report(self, state: Enforcement, took: float | None = None) -> None:
        """Swap in ``state``; tell ``on_report`` when it changed or a policy change
        just came into force (``took`` seconds after it arrived)."""
        changed, self.state = state != self.state, state
        if self._on_report is not None and (changed or took is not None):
            self._on_report(state, took)

    def sync(self, fed: Inputs) -> None:
        """Program what ``fed`` (every followed record) and the ADDs not yet in it say."""
        self.bad_records.report(PART, fed.bad)
        with self._lock:
            self._containers.take(fed)
            self._program()

    # -- ADD and DEL -----------------------------------------------------------------

    def cover(self, key: str, endpoint: Endpoint, network: NetworkInfo) -> None:
        """Program ``endpoint``'s elements now (an ADD; from any thread). Raises
        NetError when the kernel refuses: ADD fails and undoes itself."""
        containers = self._containers
        with self._lock, self._unknown_on_failure():
            if containers.fed is None:
                containers.take(self._read_store())  # before the first feed: from the store
            if self._can_just_add(key, endpoint, network):
                self._add_elements(key, endpoint)
                return
            containers.cover(key, endpoint)
            if containers.networks().get(network.name) != network:
                containers.added_networks[network.name] = network  # its first ADD: not fed yet
            self._program()

    def uncover(self, key: str) -> None:
        """Remove a container's elements (a DEL; from any thread)."""
        with self._lock, self._unknown_on_failure():
            self._containers.uncover(key)
            self._program()

    @contextlib.contextmanager
    def _unknown_on_failure(self) -> Iterator[None]:
        """A batch the kernel refused leaves its table unknown (someone flushed the
        ruleset, say): the next ADD, DEL or feed reads it back and rewrites it,
        instead of sending element batches to a table that is gone."""
        try:
            yield
        except BaseException:
            self._known, self._programmed_from = False, None
            raise

    # -- the table (under the lock) --------------------------------------------------

    def _can_just_add(self, key: str, endpoint: Endpoint, network: NetworkInfo) -> bool:
        """Whether ``endpoint`` costs only its own elements: the table is programmed
        (so it stays needed) from a plan of these very networks and policies and
        of every container changed so far, and the container is new (a re-ADD may
        bring other addresses)."""
        networks = self._containers.networks()
        return (
            self._known
            and self._programmed is not None
            and self._fill is not None
            and self._containers.fresh
            and self._unfilled == set()
            and networks.get(network.name) == network
            and self._plan_of == self._inputs_key(networks)
            and not self._containers.holds(key)
        )

    def _add_elements(self, key: str, endpoint: Endpoint) -> None:
        """ADD's common case: the elements it contributes, in one small batch."""
        assert self._fill is not None and self._programmed is not None
        elements = self._fill.plan.elements(endpoint, self.me)
        have = self._programmed.members
        new = {name: items - have.get(name, frozenset()) for name, items in elements.items()}
        policy_table.apply(add_elements(new))
        self._containers.cover(key, endpoint)
        self._containers.refresh()  # just ``key``: the view was fresh
        self._fill.put(key, endpoint, elements)
        self._programmed = self._programmed.plus(elements)
        self._programmed_from = (self._plan_of, self._containers.version)

    def _filled(
        self, plan_of: tuple, networks: dict[str, NetworkInfo]
    ) -> tuple[Dataplane, Shares, Shares]:
        """The plan of ``plan_of`` filled with the containers, and the (before, after)
        shares of those whose share changed, for ``_forget_departed``. A container's
        share is matched against the selectors once per plan and record, so a
        batch costs the containers that changed: not every container against
        every selector, nor a union of every container's share."""
        was = None
        if self._fill is None or plan_of != self._plan_of:
            was = self._fill.shares if self._fill is not None else {}
            self._fill = Fill(compile_plan(plan_of[0], networks.values()), self.me)
            self._plan_of, self._unfilled = plan_of, None
        endpoints = self._containers.endpoints
        keys = self._unfilled
        if keys is None:
            keys = endpoints.keys() | self._fill.shares.keys()
        before, after = self._fill.update(endpoints, keys)
        self._unfilled = set()
        if was is not None:  # a new plan: every container's share is new
            before, after = was, self._fill.shares
        return self._fill.dataplane(), before, after

    def _inputs_key(self, networks: dict[str, NetworkInfo]) -> tuple:
        fed = self._containers.fed
        assert fed is not None
        policies = sorted(fed.policies.values(), key=lambda p: p.name)
        return (tuple(policies), tuple(sorted(networks.items())))

    def _note_changes(self) -> None:
        """Bring the containers' view up to date; note for the fill what changed."""
        changed = self._containers.refresh()
        if changed is None:
            self._unfilled = None
        elif self._unfilled is not None:
            self._unfilled |= changed

    def _program(self) -> None:
        containers = self._containers
        if containers.fed is None:
            return  # nothing read yet: the first feed programs
        self._note_changes()
        networks = containers.networks()
        plan_of = self._inputs_key(networks)
        if self._known and self._programmed_from == (plan_of, containers.version):
            # The ADD's own store write, the DEL's release, fed after ADD or DEL
            # programmed them (or before, then ADD finds them in): 30-50 ms of
            # fill and diff at 1000 containers and 50 policies, under the lock
            # the next ADD waits for.
            return
        policies = plan_of[0]
        listed = not self._known
        if listed:
            current, present = segmentation.programmed()
        else:
            current, present = self._programmed, self._programmed is not None
        want, before, after = None, {}, {}
        local = segmentation.needed(networks, policies, containers.local.values(), self.me)
        if local or (present and self._made and _governs(networks, policies)):
            want, before, after = self._filled(plan_of, networks)
            self._made = True
        # Only elements, when only containers came or went: ``delta`` keeps the rules.
        self._programmed, self._known = segmentation.converge(current, want, present), True
        self._programmed_from = (plan_of, containers.version)
        self._forget_departed(current, before, after, listed)

    def _forget_departed(
        self, before: Dataplane | None, was: Shares, now: Shares, listed: bool
    ) -> None:
        """Delete the conntrack entries of the addresses that left a set or map, or
        changed owner in one (``departures``), under rules of the same generation:
        their connections would keep a verdict the table no longer gives. From the
        shares of the containers that changed (``was`` before, ``now`` after), or
        whole tables when the old one was read back."""
        after = self._programmed
        if before is None or after is None or before.generation != after.generation:
            return
        if listed:
            gone = departures.departed_between(before, after)
        else:
            gone = departures.departed_shares(was, now, self.me)
        if gone:
            self._forget([ip_address(a) for a in sorted(gone)], "enforcer: left a set")


def _governs(networks: dict[str, NetworkInfo], policies: tuple) -> bool:
    """Whether some network is isolated or has a policy, on any host."""
    return bool(policies) or any(n.isolate for n in networks.values())
