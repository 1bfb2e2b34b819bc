"""The store schema: every key netplug keeps in the store and every record's bytes.

The one place that maps names to keys (as CoreDNS's ``plugin/etcd/msg/path.go``):
nothing else formats or splits a key (``tests/unit/ipam/test_schema.py`` scans
the package for it). Each kind below has ``key(...)``, ``parse(key)``,
``encode(record)`` and ``decode(bytes)``:

    kind             key under /netplug/                      value: a JSON object of
    ---------------  ---------------------------------------  ------------------------------------
    Blocks           blocks/<network>/<block CIDR>            host
    Ips              ips/<network>/<block CIDR>/<address>     host, containerID, ifname
    Attachments      attachments/<network>/<host>/            containerID, ifname, netns, names,
                         <container>/<ifname>                 ips: [{address, gateway, block}]
    Networks         networks/<network>                       subnet, subnet6, vni, domain,
                                                              block_prefix, block_prefix6
    NetworkRegistry  network-registry                         network: the last one recorded
    Vteps            vteps/<network>/<host>                   vtep, mac, vni
    Hosts            hosts/<host>                             vtep, instance, since; leased
    Identity         identity                                 id: the store's identity
    Names            dns/<name>                               addresses, ttl, srv; leased with ttl
    Policies         policies/<name>                          a policy's normalized document
                                                              (``netplug.policy.model``)
    PolicyDeleted    policy-deleted                           policy: the one deleted last
    Enforcement      enforcement/<host>                       revision, counters, isolationDropped,
                                                              error; leased with the host record

Addresses sit under their block, so a block's used addresses are one prefix
range; attachments sit under their host, so "this host's containers" is too.
A host record lives under its agent's TTL lease: it vanishes when the agent
stops renewing it. Pending releases are not in the store: they wait on the
host (``ipam.pending``) for the store to answer.

A DNS name's value is decoded by ``dns.records.decode_registration``: its checks
are the API's own (one gate for request bodies and stored records), and IPAM,
which sits below DNS, must not import it. Every value here is JSON with sorted
keys and no spaces: byte-stable, because a block claim compares its value
byte for byte.

A key that is not of its kind's form raises ``MalformedKey``; a value that is
not a record of its kind raises ``MalformedRecord``. Both are ``SchemaError``
(a ``ValueError``): a reader of many records skips one it cannot read and
counts it, rather than stopping at it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Interface, IPv6Interface, ip_address, ip_interface, ip_network
from typing import Any, NamedTuple

from netplug.ipam.blocks import Address, Network
from netplug.policy.model import Policy, PolicyError, parse_document
from netplug.policy.report import Counts, HostCounters

Interface = IPv4Interface | IPv6Interface

ROOT = "/netplug/"


class SchemaError(ValueError):
    """A key or a value that is not what the schema says; the message says which."""


class MalformedKey(SchemaError):
    pass


class MalformedRecord(SchemaError):
    pass


# -- the codec every record shares ----------------------------------------------


def encode_json(record: object) -> bytes:
    return json.dumps(record, separators=(",", ":"), sort_keys=True).encode()


def decode_object(value: bytes, kind: str) -> dict:
    """The JSON object in ``value``; raises MalformedRecord naming ``kind``."""
    try:
        record = json.loads(value)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError too
        raise MalformedRecord(f"{kind} record: expected JSON, got {_shown(value)} ({e})") from None
    if not isinstance(record, dict):
        raise MalformedRecord(f"{kind} record: expected a JSON object, got {_shown(value)}")
    return record


def _field(record: dict, name: str, kind: str, want: type = str) -> Any:
    value = record.get(name)
    # bool is an int to Python, never a number to netplug.
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        raise MalformedRecord(f"{kind} record: expected {name!r} as {want.__name__}, got {value!r}")
    return value


def _shown(value: bytes) -> str:
    return repr(value) if len(value) <= 64 else f"{value[:64]!r}... ({len(value)} bytes)"


def _parts(key: str, prefix: str, count: int, form: str) -> list[str]:
    """The ``count`` non-empty "/"-separated segments after ``prefix``; raises MalformedKey."""
    if key.startswith(prefix):
        parts = key[len(prefix) :].split("/")
        if len(parts) == count and "" not in parts:
            return parts
    raise MalformedKey(f"{key!r}: expected a key of the form {prefix}{form}")


def _network(text: str, key: str) -> Network:
    try:
        return ip_network(text)
    except ValueError as e:
        raise MalformedKey(f"{key!r}: {e}") from None


# -- blocks: which host holds which block -----------------------------------------


class BlockKey(NamedTuple):
    network: str
    block: Network


class _OneField:
    """A kind whose record holds one string ``FIELD`` (``KIND`` names it in errors)."""

    FIELD: str
    KIND: str

    @classmethod
    def encode(cls, value: str) -> bytes:
        return encode_json({cls.FIELD: value})

    @classmethod
    def decode(cls, value: bytes) -> str:
        return _field(decode_object(value, cls.KIND), cls.FIELD, cls.KIND)


class Blocks(_OneField):
    """The value: the host that holds the block."""

    PREFIX = f"{ROOT}blocks/"
    FIELD, KIND = "host", "block"

    @staticmethod
    def prefix(network: str) -> str:
        return f"{Blocks.PREFIX}{network}/"

    @staticmethod
    def key(network: str, block: Network) -> str:
        return f"{Blocks.PREFIX}{network}/{block}"

    @staticmethod
    def parse(key: str) -> BlockKey:
        network, address, length = _parts(key, Blocks.PREFIX, 3, "<network>/<block CIDR>")
        return BlockKey(network, _network(f"{address}/{length}", key))


# -- ips: each used address, under its block --------------------------------------


class IpKey(NamedTuple):
    network: str
    block: Network
    address: Address


class AddressOwner(NamedTuple):
    host: str
    container_id: str
    ifname: str


class Ips:
    PREFIX = f"{ROOT}ips/"

    @staticmethod
    def block_prefix(network: str, block: Network) -> str:
        return f"{Ips.PREFIX}{network}/{block}/"

    @staticmethod
    def key(network: str, block: Network, address: Address) -> str:
        return f"{Ips.block_prefix(network, block)}{address}"

    @staticmethod
    def parse(key: str) -> IpKey:
        form = "<network>/<block CIDR>/<address>"
        network, base, length, address = _parts(key, Ips.PREFIX, 4, form)
        try:
            return IpKey(network, _network(f"{base}/{length}", key), ip_address(address))
        except ValueError as e:
            raise MalformedKey(f"{key!r}: {e}") from None

    @staticmethod
    def addresses(keys: Iterable[str], prefix: str) -> frozenset[Address]:
        """The addresses of ``keys``, all under the one block prefix ``prefix``
        (``block_prefix``): the used-address read of every ADD, so only the last
        segment is parsed. Raises MalformedKey."""
        try:
            return frozenset(ip_address(key[len(prefix) :]) for key in keys)
        except ValueError as e:
            raise MalformedKey(f"under {prefix!r}: {e}") from None

    @staticmethod
    def encode(owner: AddressOwner) -> bytes:
        return encode_json(
            {"host": owner.host, "containerID": owner.container_id, "ifname": owner.ifname}
        )

    @staticmethod
    def decode(value: bytes) -> AddressOwner:
        record = decode_object(value, "address")
        return AddressOwner(
            _field(record, "host", "address"),
            _field(record, "containerID", "address"),
            _field(record, "ifname", "address"),
        )


# -- attachments: one container interface's addresses and names -------------------


@dataclass(frozen=True, slots=True)
class Allocation:
    address: Interface  # carries the block's prefix
    gateway: Address
    block: Network


@dataclass(frozen=True, slots=True)
class Attachment:
    network: str
    host: str
    container_id: str
    ifname: str
    allocations: tuple[Allocation, ...]
    names: tuple[str, ...] = field(default=())
    netns: str = ""  # the container's namespace path at ADD: lets GC tell live from gone

    @property
    def key(self) -> str:
        return Attachments.key(self.network, self.host, self.container_id, self.ifname)

    def record(self) -> dict:
        return {
            "containerID": self.container_id,
            "ifname": self.ifname,
            "ips": [
                {"address": str(a.address), "gateway": str(a.gateway), "block": str(a.block)}
                for a in self.allocations
            ],
            "names": list(self.names),
            "netns": self.netns,
        }

    @classmethod
    def from_record(cls, network: str, host: str, record: dict) -> Attachment:
        """Raises KeyError, TypeError or ValueError for a record that is not one;
        ``Attachments.decode`` turns them into MalformedRecord."""
        allocations = tuple(
            Allocation(
                ip_interface(ip["address"]), ip_address(ip["gateway"]), ip_network(ip["block"])
            )
            for ip in record["ips"]
        )
        return cls(
            network,
            host,
            record["containerID"],
            record["ifname"],
            allocations,
            tuple(record.get("names", ())),
            record.get("netns", ""),
        )


class AttachmentKey(NamedTuple):
    network: str
    host: str
    container_id: str
    ifname: str


class Attachments:
    PREFIX = f"{ROOT}attachments/"

    @staticmethod
    def host_prefix(network: str, host: str) -> str:
        return f"{Attachments.PREFIX}{network}/{host}/"

    @staticmethod
    def key(network: str, host: str, container_id: str, ifname: str) -> str:
        return f"{Attachments.host_prefix(network, host)}{container_id}/{ifname}"

    @staticmethod
    def parse(key: str) -> AttachmentKey:
        form = "<network>/<host>/<container>/<ifname>"
        return AttachmentKey(*_parts(key, Attachments.PREFIX, 4, form))

    @staticmethod
    def encode(attachment: Attachment) -> bytes:
        return encode_json(attachment.record())

    @staticmethod
    def decode(value: bytes, network: str, host: str) -> Attachment:
        """The attachment of ``host`` in ``network`` (the key's) that ``value`` records."""
        record = decode_object(value, "attachment")
        try:
            return Attachment.from_record(network, host, record)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise MalformedRecord(f"attachment record: {type(e).__name__}: {e}") from None


# -- networks: each network's layout, and the key that serializes their writes ----


VXLAN_PORT = 4789  # IANA's, a network's vxlan.port unless its config says otherwise


@dataclass(frozen=True, slots=True)
class NetworkRecord:
    subnet: str
    subnet6: str  # "" without IPv6
    vni: int | None  # 0: no VXLAN device (netplug-ipam); None, when wanted: any free one
    domain: str
    block_prefix: int = 0  # hostBlockPrefix(6); 0 in records written before they were kept
    block_prefix6: int = 0
    # Segmentation (netplug's own networks; netplug-ipam's datapath is its main
    # plugin's, so False there); see ``Networks.decode`` for older records.
    isolate: bool = True
    # vxlan.port: hosts that disagree never reach each other. Written only when
    # not the default (``Networks.encode``): readers from before it refuse an
    # unknown field, and a network on the default port must stay readable to them.
    port: int = VXLAN_PORT

    def subnets(self) -> list:
        return [ip_network(s) for s in (self.subnet, self.subnet6) if s]


class _OneName:
    """A kind whose keys are ``PREFIX<name>``: one name each."""

    PREFIX: str
    FORM: str

    @classmethod
    def key(cls, name: str) -> str:
        return f"{cls.PREFIX}{name}"

    @classmethod
    def parse(cls, key: str) -> str:
        return _parts(key, cls.PREFIX, 1, cls.FORM)[0]


class Networks(_OneName):
    PREFIX, FORM = f"{ROOT}networks/", "<network>"

    @staticmethod
    def encode(record: NetworkRecord) -> bytes:
        fields = asdict(record)
        if record.port == VXLAN_PORT:
            del fields["port"]
        return encode_json(fields)

    @staticmethod
    def decode(value: bytes) -> NetworkRecord:
        fields = decode_object(value, "network")
        # Written before isolate was kept: netplug's own networks were isolated by
        # default, netplug-ipam's (no VNI) never are.
        fields.setdefault("isolate", fields.get("vni") != 0)
        try:
            return NetworkRecord(**fields)
        except TypeError as e:  # a missing or unknown field
            raise MalformedRecord(f"network record: {e}") from None


class _OneKey(_OneField):
    """A kind with one key, whose record holds one string ``FIELD``."""

    KEY: str

    @classmethod
    def key(cls) -> str:
        return cls.KEY

    @classmethod
    def parse(cls, key: str) -> None:
        if key != cls.KEY:
            raise MalformedKey(f"{key!r}: expected {cls.KEY}")


class NetworkRegistry(_OneKey):
    """Bumped with every network record written: the compare that serializes them.
    Its record names the network recorded last."""

    KEY, FIELD, KIND = f"{ROOT}network-registry", "network", "network registry"


# -- VTEPs and hosts: what the overlay programs ------------------------------------


class VtepKey(NamedTuple):
    network: str
    host: str


class VtepRecord(NamedTuple):
    vtep: str
    mac: str
    vni: int


class Vteps:
    PREFIX = f"{ROOT}vteps/"

    @staticmethod
    def key(network: str, host: str) -> str:
        return f"{Vteps.PREFIX}{network}/{host}"

    @staticmethod
    def parse(key: str) -> VtepKey:
        return VtepKey(*_parts(key, Vteps.PREFIX, 2, "<network>/<host>"))

    @staticmethod
    def encode(record: VtepRecord) -> bytes:
        return encode_json(record._asdict())

    @staticmethod
    def decode(value: bytes) -> VtepRecord:
        record = decode_object(value, "VTEP")
        return VtepRecord(
            _field(record, "vtep", "VTEP"),
            _field(record, "mac", "VTEP"),
            _field(record, "vni", "VTEP", int),
        )


class HostRecord(NamedTuple):
    vtep: str = ""
    instance: str = ""  # the agent's boot id and namespace: tells its successor from a rival
    since: int = 0  # when its agent registered (epoch seconds); 0 if unknown


class Hosts(_OneName):
    PREFIX, FORM = f"{ROOT}hosts/", "<host>"

    @staticmethod
    def encode(record: HostRecord) -> bytes:
        return encode_json(record._asdict())

    @staticmethod
    def decode(value: bytes) -> HostRecord:
        """Fields a record lacks take their defaults (hand-written records have only a VTEP)."""
        record = decode_object(value, "host")
        found = HostRecord(**{f: record[f] for f in HostRecord._fields if f in record})
        if not (isinstance(found.vtep, str) and isinstance(found.instance, str)):
            raise MalformedRecord(f"host record: expected strings, got {found}")
        if not isinstance(found.since, int) or isinstance(found.since, bool):
            raise MalformedRecord(f"host record: expected 'since' as int, got {found.since!r}")
        return found


# -- the store's identity ------------------------------------------------------------


class Identity(_OneKey):
    """Written once per store: hosts remember it and refuse a store without it."""

    KEY, FIELD, KIND = f"{ROOT}identity", "id", "identity"


# -- DNS names registered through the API ---------------------------------------------


class Names(_OneName):
    """A name relative to the DNS domain, lower-case (``api``, ``db.prod``); the value
    is a ``dns.records.Registration``'s JSON (see the module's docstring)."""

    PREFIX, FORM = f"{ROOT}dns/", "<name>"

    encode = staticmethod(encode_json)

    @staticmethod
    def decode(value: bytes) -> dict:
        """The JSON object; ``dns.records.decode_registration`` checks its fields."""
        return decode_object(value, "DNS name")


# -- network policies ----------------------------------------------------------------


class Policies(_OneName):
    """A policy by name; the value is its normalized document (``Policy.to_json``),
    checked again on the way out with the same rules as ``netplugctl policy apply``
    (but for the networks, which may have gone since)."""

    PREFIX, FORM = f"{ROOT}policies/", "<name>"

    @staticmethod
    def encode(policy: Policy) -> bytes:
        return encode_json(policy.to_json())

    @staticmethod
    def decode(value: bytes) -> Policy:
        try:
            (policy,) = parse_document(decode_object(value, "policy"), None)
        except PolicyError as e:
            raise MalformedRecord(f"policy record: {e}") from None
        return policy


class PolicyDeleted(_OneKey):
    """Bumped with every policy deleted, so that the policy revision (the newest of
    this key's and the policy records' mod revisions) moves on a delete too."""

    KEY, FIELD, KIND = f"{ROOT}policy-deleted", "policy", "policy deletion"


# -- enforcement: what each host's agent reports of the policies it enforces --------


@dataclass(frozen=True, slots=True)
class EnforcementRecord:
    revision: int | None  # the policy revision in force on the host; None: none yet
    counters: HostCounters  # its table's packet counters
    error: str = ""  # why the table cannot be made to match the store, while it cannot


class Enforcement(_OneName):
    """A host's report, written by its agent under the host record's lease: a dead
    host's counters leave the sums when its lease expires."""

    PREFIX, FORM = f"{ROOT}enforcement/", "<host>"

    @staticmethod
    def encode(record: EnforcementRecord) -> bytes:
        return encode_json(
            {
                "revision": record.revision,
                "counters": {
                    name: [c.allowed, c.dropped] for name, c in record.counters.policies.items()
                },
                "isolationDropped": record.counters.isolation_dropped,
                "error": record.error,
            }
        )

    @staticmethod
    def decode(value: bytes) -> EnforcementRecord:
        kind = "enforcement"
        record = decode_object(value, kind)
        revision = record.get("revision")
        if revision is not None:
            revision = _field(record, "revision", kind, int)
        counters = _field(record, "counters", kind, dict)
        policies = {}
        for name, pair in counters.items():
            if not (isinstance(pair, list) and len(pair) == 2 and all(_count(n) for n in pair)):
                raise MalformedRecord(
                    f"{kind} record: expected counters.{name} as [allowed, dropped], got {pair!r}"
                )
            policies[name] = Counts(*pair)
        isolation = _field(record, "isolationDropped", kind, int)
        return EnforcementRecord(
            revision, HostCounters(policies, isolation), _field(record, "error", kind)
        )


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
