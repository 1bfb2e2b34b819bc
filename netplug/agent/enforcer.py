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

from netplug.agent.enforcement import Enforcement, Progress
from netplug.agent.records import BadRecords
from netplug.agent.store_view import Feed, Full, mirror
from netplug.cni import segmentation
from netplug.cni.segmentation import Inputs
from netplug.ipam.schema import PolicyDeleted
from netplug.ipam.store.base import KeyValue
from netplug.net import NetError, policy_table
from netplug.policy import departures
from netplug.policy.plan import (
    Address,
    Dataplane,
    Endpoint,
    NetworkInfo,
    Plan,
    Share,
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
        self._fed: Inputs | None = None  # the feed's records, parsed (None: not fed yet)
        self._added: dict[str, Endpoint] = {}  # covered by ADD, not yet in the feed
        self._added_networks: dict[str, NetworkInfo] = {}
        self._deleted: set[str] = set()  # uncovered by DEL, still in the feed
        self._plan: Plan | None = None
        self._plan_of: tuple | None = None  # the (policies, networks) it was compiled from
        self._shares: dict[str, tuple[Endpoint, Share]] = {}  # each container's, under _plan
        self._programmed: Dataplane | None = None  # what the table holds, None: no table
        self._known = False  # whether _programmed is known (else the kernel is read)
        # The (plan inputs, containers) _programmed holds, while _known: a batch of
        # store events that brings what ADD or DEL already did costs no fill or diff.
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
        held: dict[str, KeyValue] = {}
        reader = segmentation.Reader()  # decodes the records that changed only
        read, pending, wait = False, False, IDLE
        while not stop.is_set():
            updates = feed.take(stop, wait)
            progress.take(updates)
            for update in updates:
                mirror(held, update)
                if isinstance(update, Full):
                    read = True
                    with self._lock:
                        self._known = False  # a full read: mark and sweep the kernel's
            pending = pending or bool(updates)
            if not read or not pending or stop.is_set():
                continue
            try:
                self.sync(reader.inputs(held.values()))
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
            for key in list(self._added):
                if key in fed.endpoints:
                    del self._added[key]
            self._added_networks = {
                n: info for n, info in self._added_networks.items() if n not in fed.networks
            }
            self._deleted &= fed.endpoints.keys()
            self._fed = fed
            self._program()

    # -- ADD and DEL -----------------------------------------------------------------

    def cover(self, key: str, endpoint: Endpoint, network: NetworkInfo) -> None:
        """Program ``endpoint``'s elements now (an ADD; from any thread). Raises
        NetError when the kernel refuses: ADD fails and undoes itself."""
        with self._lock, self._unknown_on_failure():
            if self._fed is None:
                self._fed = self._read_store()  # before the first feed: from the store
            if self._can_just_add(key, endpoint, network):
                self._add_elements(key, endpoint)
                return
            self._deleted.discard(key)
            self._added[key] = endpoint
            if self._networks().get(network.name) != network:
                self._added_networks[network.name] = network  # its first ADD: not fed yet
            self._program()

    def uncover(self, key: str) -> None:
        """Remove a container's elements (a DEL; from any thread)."""
        with self._lock, self._unknown_on_failure():
            self._added.pop(key, None)
            if self._fed is not None and key in self._fed.endpoints:
                self._deleted.add(key)
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

    def _networks(self) -> dict[str, NetworkInfo]:
        fed = self._fed.networks if self._fed is not None else {}
        return {**fed, **self._added_networks}

    def _endpoints(self) -> dict[str, Endpoint]:
        fed = self._fed.endpoints if self._fed is not None else {}
        mine = {k: e for k, e in fed.items() if k not in self._deleted}
        return {**mine, **self._added}

    def _can_just_add(self, key: str, endpoint: Endpoint, network: NetworkInfo) -> bool:
        """Whether ``endpoint`` costs only its own elements: the table is programmed
        (so it stays needed) from a plan of these very networks and policies, and
        the container is new (a re-ADD may bring other addresses)."""
        return (
            self._known
            and self._programmed is not None
            and self._plan is not None
            and self._networks().get(network.name) == network
            and self._plan_of == self._inputs_key(self._networks())
            and not self._holds(key)
        )

    def _holds(self, key: str) -> bool:
        assert self._fed is not None
        fed = key in self._fed.endpoints and key not in self._deleted
        return fed or key in self._added

    def _add_elements(self, key: str, endpoint: Endpoint) -> None:
        """ADD's common case: the elements it contributes, in one small batch."""
        assert self._plan is not None and self._programmed is not None
        elements = self._plan.elements(endpoint, self.me)
        self._shares[key] = (endpoint, elements)
        have = self._programmed.members
        new = {name: items - have.get(name, frozenset()) for name, items in elements.items()}
        policy_table.apply(add_elements(new))
        self._deleted.discard(key)
        self._added[key] = endpoint
        self._programmed = self._programmed.plus(elements)
        self._programmed_from = (self._plan_of, self._endpoints())

    def _fill(self, endpoints: dict[str, Endpoint]) -> Dataplane:
        """The plan fed with ``endpoints``. A container's share is matched against the
        selectors once per plan and record, so a batch costs the containers that
        changed, plus set unions: not every container against every selector."""
        assert self._plan is not None
        shares = {}
        for key, e in endpoints.items():
            kept = self._shares.get(key)
            same = kept is not None and (kept[0] is e or kept[0] == e)  # the Reader's: is
            shares[key] = kept if same else (e, self._plan.elements(e, self.me))
        self._shares = shares
        return self._plan.filled(share for _, share in shares.values())

    def _inputs_key(self, networks: dict[str, NetworkInfo]) -> tuple:
        assert self._fed is not None
        policies = sorted(self._fed.policies.values(), key=lambda p: p.name)
        return (tuple(policies), tuple(sorted(networks.items())))

    def _program(self) -> None:
        if self._fed is None:
            return  # nothing read yet: the first feed programs
        networks, endpoints = self._networks(), self._endpoints()
        plan_of = self._inputs_key(networks)
        if self._known and self._programmed_from == (plan_of, endpoints):
            # The ADD's own store write, the DEL's release, fed after ADD or DEL
            # programmed them (or before, then ADD finds them in): 30-50 ms of
            # fill and diff at 1000 containers and 50 policies, under the lock
            # the next ADD waits for.
            return
        policies = plan_of[0]
        was, listed = self._shares, not self._known
        if listed:
            current, present = segmentation.programmed()
        else:
            current, present = self._programmed, self._programmed is not None
        want = None
        local = segmentation.needed(networks, policies, endpoints.values(), self.me)
        if local or (present and self._made and _governs(networks, policies)):
            if plan_of != self._plan_of:
                self._plan, self._plan_of = compile_plan(policies, networks.values()), plan_of
                self._shares = {}
            want = self._fill(endpoints)
            self._made = True
        # Only elements, when only containers came or went: ``delta`` keeps the rules.
        self._programmed, self._known = segmentation.converge(current, want, present), True
        self._programmed_from = (plan_of, endpoints)
        self._forget_departed(current, was, listed)

    def _forget_departed(
        self, before: Dataplane | None, was: dict[str, tuple[Endpoint, Share]], listed: bool
    ) -> None:
        """Delete the conntrack entries of the addresses that left a set or map, or
        changed owner in one (``departures``), under rules of the same generation:
        their connections would keep a verdict the table no longer gives. From the
        containers' shares, or whole tables when the old one was read back."""
        after = self._programmed
        if before is None or after is None or before.generation != after.generation:
            return
        if listed:
            gone = departures.departed_between(before, after)
        else:
            gone = departures.departed_shares(was, self._shares, self.me)
        if gone:
            self._forget([ip_address(a) for a in sorted(gone)], "enforcer: left a set")


def _governs(networks: dict[str, NetworkInfo], policies: tuple) -> bool:
    """Whether some network is isolated or has a policy, on any host."""
    return bool(policies) or any(n.isolate for n in networks.values())
