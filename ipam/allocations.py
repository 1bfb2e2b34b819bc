"""Address allocation against the store: blocks per host, addresses per attachment.

An attachment (network, container ID, ifname) gets one address per pool (an
IPv4 pool, and an IPv6 one for dual stack) in one compare-and-swap
transaction, together with its attachment record: either every key is written
or none is, so a crash never leaves half an allocation and two hosts or
processes never hold the same address. The choices themselves are the pure
functions of ``blocks`` and ``allocator``; this module only reads and writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from ipaddress import ip_interface

from netplug.ipam.allocator import candidates, is_usable
from netplug.ipam.block_view import BlockView
from netplug.ipam.blocks import Address, Network, block_of, choose_free_block, gateway

# Allocation and Attachment are the store's records; importers know them from here too.
from netplug.ipam.schema import AddressOwner, Allocation, Attachment, Attachments, Blocks, Ips
from netplug.ipam.store.base import (
    Compare,
    Delete,
    KeyValue,
    OutcomeUnknown,
    Put,
    Store,
    TxnResult,
)

# Each attempt re-reads the store; contention that outlasts this many is
# reported as "try again later" rather than spinning.
MAX_ATTEMPTS = 64


class IPAMError(Exception):
    """An allocation that cannot be made; ``code`` is the CNI error code."""

    code = 7


class PoolExhausted(IPAMError):
    code = 100


class AddressUnavailable(IPAMError):
    code = 101


class Contention(IPAMError):
    code = 11


@dataclass(frozen=True, slots=True)
class Pool:
    subnet: Network
    block_prefix: int


def _require_pool_families(network: str, pools: Sequence[Pool], static: Sequence[Address]) -> None:
    """A static address of a family none of the pools has is refused: ``_pick``
    would skip it, and the attachment get another family's address unsaid."""
    families = {pool.subnet.version for pool in pools}
    for address in static:
        if address.version not in families:
            key = "subnet6" if address.version == 6 else "subnet"
            raise IPAMError(
                f"requested address {address} is IPv{address.version} and network {network} "
                f"has no IPv{address.version} subnet: set {key} in its config, or request "
                "an address of its subnet"
            )


class IPAM:
    """One host's view of the address space of every network in ``store``."""

    def __init__(self, store: Store, host: str) -> None:
        self.store = store
        self.host = host
        self.view = BlockView()  # the hint and the used addresses, as last seen

    # -- allocation ---------------------------------------------------------

    def allocate(
        self,
        network: str,
        pools: Sequence[Pool],
        container_id: str,
        ifname: str,
        static: Sequence[Address] = (),
        names: Sequence[str] = (),
        netns: str = "",
    ) -> Attachment:
        """One address from each pool for the attachment (idempotent).

        ``static`` pins the address of its family. Raises PoolExhausted,
        AddressUnavailable (static address taken or in another host's block),
        IPAMError (static address outside the pools), Contention.
        """
        _require_pool_families(network, pools, static)
        existing = self._made_again(network, container_id, ifname, tuple(names), netns)
        if existing is not None:
            return existing
        ident = f"{container_id}/{ifname}"
        for _ in range(MAX_ATTEMPTS):
            picks = tuple(self._pick(network, pool, ident, static) for pool in pools)
            attachment = Attachment(
                network, self.host, container_id, ifname, picks, tuple(names), netns
            )
            if self._claim(attachment):
                self._note_used(network, attachment.allocations, True)
                return attachment
            self.view.forget()  # read the blocks afresh on the next attempt
            existing = self.lookup(network, container_id, ifname)
            if existing is not None:
                return existing
        raise Contention(f"could not claim an address in {network} after {MAX_ATTEMPTS} attempts")

    def _made_again(
        self, network: str, container_id: str, ifname: str, names: tuple[str, ...], netns: str
    ) -> Attachment | None:
        """The attachment's record when it exists (None: none), rewritten with this
        ADD's namespace and names where they differ: the same container ID ADDed
        again without a DEL (podman starting a container after a reboot, which took
        its namespace along) keeps its addresses, but a record still naming the dead
        namespace would have ``netplugctl gc`` release a running container, and
        DNS answer its old names."""
        for _ in range(MAX_ATTEMPTS):
            record = self._record(network, container_id, ifname)
            if record is None:
                return None
            kv, found = record
            if not netns or (found.netns, found.names) == (netns, names):
                return found
            made = replace(found, names=names, netns=netns)
            if settled_cas(
                self.store, [Compare.unchanged(kv)], [Put(kv.key, Attachments.encode(made))]
            ):
                return made
        raise Contention(f"could not update {container_id}/{ifname} after {MAX_ATTEMPTS} attempts")

    def _claim(self, attachment: Attachment) -> bool:
        owner = AddressOwner(self.host, attachment.container_id, attachment.ifname)
        ip_keys = [self._ip_key(attachment.network, a) for a in attachment.allocations]
        # Each block must still be this host's: a remembered block may have been taken away.
        mine = Blocks.encode(self.host)
        compares = [
            Compare.absent(attachment.key),
            *(Compare.absent(k) for k in ip_keys),
            *(
                Compare(Blocks.key(attachment.network, a.block), "value", "=", mine)
                for a in attachment.allocations
            ),
        ]
        puts = [
            Put(attachment.key, Attachments.encode(attachment)),
            *(Put(k, Ips.encode(owner)) for k in ip_keys),
        ]
        return settled_cas(self.store, compares, puts)

    def _pick(self, network: str, pool: Pool, ident: str, static: Sequence[Address]) -> Allocation:
        wanted = [a for a in static if a.version == pool.subnet.version]
        if wanted:
            return self._pick_static(network, pool, wanted[0])
        found = self._pick_in_held_blocks(network, pool, ident)
        if found is None and self.view.knows_any():
            self.view.forget()  # full as last seen; before leasing a block, look again
            found = self._pick_in_held_blocks(network, pool, ident)
        if found is None:
            found = self._lease_new_block(network, pool, ident)
        self.view.set_hint(network, found.block)
        return found

    def _pick_in_held_blocks(self, network: str, pool: Pool, ident: str) -> Allocation | None:
        hint = self.view.hint(network, pool.subnet.version)
        if hint is not None:  # the block that last had room: no need to list the others
            found = next(candidates(hint, self._used(network, hint), ident), None)
            if found is not None:
                return _allocation(found, hint)
        for block in self.host_blocks(network, pool):
            if block == hint:
                continue
            found = next(candidates(block, self._used(network, block), ident), None)
            if found is not None:
                self.view.set_hint(network, block)
                return _allocation(found, block)
        return None

    def _pick_static(self, network: str, pool: Pool, address: Address) -> Allocation:
        block = block_of(pool.subnet, pool.block_prefix, address)
        if block is None:
            raise IPAMError(
                f"requested address {address} is outside {network}'s subnet {pool.subnet}"
            )
        if not is_usable(block, address):
            raise IPAMError(
                f"requested address {address} is the network, gateway or broadcast "
                f"address of {block}: pick another one"
            )
        owner = self._block_owner(network, block) or self._claim_block(network, block)
        if owner != self.host:
            raise AddressUnavailable(
                f"requested address {address} lies in block {block}, which host {owner} holds: "
                f"request it on {owner} or pick an address in this host's blocks"
            )
        taken = self.store.get(Ips.key(network, block, address))
        if taken is not None:
            holder = Ips.decode(taken.value)
            raise AddressUnavailable(
                f"requested address {address} is in use by container {holder.container_id}"
            )
        return _allocation(address, block)

    # -- blocks ----------------------------------------------------------------

    def host_blocks(self, network: str, pool: Pool) -> list[Network]:
        """This host's blocks of ``pool``, in address order."""
        return [block for block, host in self._blocks(network, pool).items() if host == self.host]

    def _blocks(self, network: str, pool: Pool) -> dict[Network, str]:
        found = {}
        for kv in self.store.range(Blocks.prefix(network), prefix=True).kvs:
            block = Blocks.parse(kv.key).block
            if block.version == pool.subnet.version and block.subnet_of(pool.subnet):
                found[block] = Blocks.decode(kv.value)
        return dict(sorted(found.items(), key=lambda item: int(item[0].network_address)))

    def _block_owner(self, network: str, block: Network) -> str | None:
        kv = self.store.get(Blocks.key(network, block))
        return None if kv is None else Blocks.decode(kv.value)

    def _claim_block(self, network: str, block: Network) -> str | None:
        """Lease ``block`` to this host unless someone else got it first; its owner."""
        key = Blocks.key(network, block)
        if settled_cas(self.store, [Compare.absent(key)], [Put(key, Blocks.encode(self.host))]):
            return self.host
        return self._block_owner(network, block)

    def _lease_new_block(self, network: str, pool: Pool, ident: str) -> Allocation:
        """An address for an ADD that found this host's blocks full, in a newly
        leased block - unless a parallel ADD on this host (another agent thread,
        another plugin process) has leased one, or freed an address, since they
        were read: a burst of ADDs then shares one new block instead of leasing
        one each. The address comes from what this very read saw (the shared
        view may already hold another thread's newer claims)."""
        for _ in range(MAX_ATTEMPTS):
            blocks = self._blocks(network, pool)
            for block, host in blocks.items():
                if host == self.host:
                    stamp = self.view.stamp(network, block)
                    used = self.view.keep(network, block, self._read_used(network, block), stamp)
                    address = next(candidates(block, used, ident), None)
                    if address is not None:
                        return _allocation(address, block)
            block = choose_free_block(pool.subnet, pool.block_prefix, set(blocks), self.host)
            if block is None:
                raise PoolExhausted(
                    f"every /{pool.block_prefix} block of {pool.subnet} in {network} is held: "
                    "free blocks with 'netplugctl hosts remove' or use a larger subnet"
                )
            if self._claim_block(network, block) == self.host:
                address = next(candidates(block, set(), ident), None)
                if address is None:
                    raise PoolExhausted(f"block {block} of {network} holds no container address")
                return _allocation(address, block)
        raise Contention(f"could not lease a block of {pool.subnet} after {MAX_ATTEMPTS} attempts")

    def _used(self, network: str, block: Network) -> frozenset[Address]:
        return self.view.used(network, block, lambda: self._read_used(network, block))

    def _read_used(self, network: str, block: Network) -> frozenset[Address]:
        prefix = Ips.block_prefix(network, block)
        return Ips.addresses((kv.key for kv in self.store.range(prefix, prefix=True).kvs), prefix)

    def _note_used(self, network: str, allocations: Sequence[Allocation], used: bool) -> None:
        """Keep what this IPAM has seen of the blocks in step with its own claims and releases."""
        for a in allocations:
            self.view.note(network, a.block, a.address.ip, used)

    @staticmethod
    def _ip_key(network: str, allocation: Allocation) -> str:
        return Ips.key(network, allocation.block, allocation.address.ip)

    # -- lookup and release ------------------------------------------------------

    def lookup(self, network: str, container_id: str, ifname: str) -> Attachment | None:
        record = self._record(network, container_id, ifname)
        return None if record is None else record[1]

    def _record(
        self, network: str, container_id: str, ifname: str
    ) -> tuple[KeyValue, Attachment] | None:
        """The attachment's record as stored and as read; None when there is none."""
        kv = self.store.get(Attachments.key(network, self.host, container_id, ifname))
        return None if kv is None else (kv, Attachments.decode(kv.value, network, self.host))

    def release(
        self, network: str, container_id: str, ifname: str, netns: str = ""
    ) -> Attachment | None:
        """Free the attachment's addresses and record; None when there was none (idempotent).

        With ``netns``, only an attachment made for that namespace (or recorded
        without one) is released: a deferred release must spare the same
        container ID attached again elsewhere, decided on the record it deletes.
        """
        for _ in range(MAX_ATTEMPTS):
            record = self._record(network, container_id, ifname)
            if record is None:
                return None
            kv, attachment = record
            if netns and attachment.netns not in ("", netns):
                return None
            deletes = [
                Delete(kv.key),
                *(Delete(self._ip_key(network, a)) for a in attachment.allocations),
            ]
            if settled_cas(self.store, [Compare.unchanged(kv)], deletes):
                self._note_used(network, attachment.allocations, False)
                return attachment
            # Changed meanwhile, or applied with its answer lost (then the next read
            # finds nothing and says None): the view cannot tell which addresses are
            # free, so the next ADD reads the blocks afresh.
            self.view.forget()
        raise Contention(f"could not release {container_id}/{ifname} after {MAX_ATTEMPTS} attempts")

    def attachments(self, network: str) -> list[Attachment]:
        """This host's attachments in ``network``."""
        kvs = self.store.range(Attachments.host_prefix(network, self.host), prefix=True).kvs
        return [Attachments.decode(kv.value, network, self.host) for kv in kvs]

    def has_room(self, network: str, pool: Pool) -> bool:
        """Whether an ADD could get an address of ``pool`` now (STATUS)."""
        blocks = self._blocks(network, pool)
        for block, host in blocks.items():
            if host != self.host:
                continue
            if next(candidates(block, self._read_used(network, block), ""), None):
                return True
        return choose_free_block(pool.subnet, pool.block_prefix, set(blocks), self.host) is not None

    def has_attachments(self, network: str) -> bool:
        prefix = Attachments.host_prefix(network, self.host)
        return bool(self.store.range(prefix, prefix=True, limit=1).kvs)


def settled_cas(store: Store, compares: Sequence[Compare], ops: Sequence) -> bool:
    """A compare-and-swap of a loop that reads again after a miss: a write whose
    answer was lost (an etcd leader change) counts as a miss, since the next read
    tells whether it was applied, and its compares keep a repeat from applying twice."""
    try:
        result: TxnResult = store.txn(compares, ops)
    except OutcomeUnknown:
        return False
    return result.succeeded


def _allocation(address: Address, block: Network) -> Allocation:
    return Allocation(ip_interface((address, block.prefixlen)), gateway(block), block)
