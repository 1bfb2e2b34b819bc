"""The store schema: every key and record round-trips, malformed ones raise the
schema's typed errors, and no module but ``ipam/schema.py`` builds or splits a key.

The literal keys and bytes below are the layout existing stores hold: a change
to one of them breaks every store already written."""

from __future__ import annotations

import ast
from ipaddress import ip_address, ip_interface, ip_network
from pathlib import Path

import pytest

import netplug
from netplug.agent.overlay import view_of
from netplug.dns.registry import FOLLOWED
from netplug.ipam.schema import (
    ROOT,
    AddressOwner,
    Allocation,
    Attachment,
    AttachmentKey,
    Attachments,
    BlockKey,
    Blocks,
    Enforcement,
    EnforcementRecord,
    HostRecord,
    Hosts,
    Identity,
    IpKey,
    Ips,
    MalformedKey,
    MalformedRecord,
    Names,
    NetworkRecord,
    NetworkRegistry,
    Networks,
    Policies,
    PolicyDeleted,
    SchemaError,
    VtepKey,
    VtepRecord,
    Vteps,
)
from netplug.policy.model import Policy
from netplug.policy.report import Counts, HostCounters

V4, V6 = ip_network("10.244.1.0/24"), ip_network("fd00:0:0:1::/64")

# kind, the key's parts, the key, what parse returns
KEYS = [
    (Blocks, ("blue", V4), "/netplug/blocks/blue/10.244.1.0/24", BlockKey("blue", V4)),
    (Blocks, ("blue", V6), "/netplug/blocks/blue/fd00:0:0:1::/64", BlockKey("blue", V6)),
    (
        Ips,
        ("blue", V4, ip_address("10.244.1.7")),
        "/netplug/ips/blue/10.244.1.0/24/10.244.1.7",
        IpKey("blue", V4, ip_address("10.244.1.7")),
    ),
    (
        Ips,
        ("blue", V6, ip_address("fd00:0:0:1::7")),
        "/netplug/ips/blue/fd00:0:0:1::/64/fd00:0:0:1::7",
        IpKey("blue", V6, ip_address("fd00:0:0:1::7")),
    ),
    (
        Attachments,
        ("blue", "node-1", "c1", "eth0"),
        "/netplug/attachments/blue/node-1/c1/eth0",
        AttachmentKey("blue", "node-1", "c1", "eth0"),
    ),
    (Networks, ("blue",), "/netplug/networks/blue", "blue"),
    (NetworkRegistry, (), "/netplug/network-registry", None),
    (Vteps, ("blue", "node-1"), "/netplug/vteps/blue/node-1", VtepKey("blue", "node-1")),
    (Hosts, ("node-1",), "/netplug/hosts/node-1", "node-1"),
    (Identity, (), "/netplug/identity", None),
    (Names, ("db.prod",), "/netplug/dns/db.prod", "db.prod"),
    (Policies, ("db-in",), "/netplug/policies/db-in", "db-in"),
    (PolicyDeleted, (), "/netplug/policy-deleted", None),
    (Enforcement, ("node-1",), "/netplug/enforcement/node-1", "node-1"),
]


@pytest.mark.parametrize(("kind", "parts", "key", "parsed"), KEYS)
def test_keys_round_trip(kind, parts, key, parsed) -> None:
    assert kind.key(*parts) == key
    assert kind.parse(key) == parsed
    if parsed is not None:
        assert kind.key(*(parsed if isinstance(parsed, tuple) else (parsed,))) == key


def test_the_prefixes_that_list_a_network_or_host_lie_under_its_kind() -> None:
    assert Blocks.prefix("blue") == "/netplug/blocks/blue/"
    assert Ips.block_prefix("blue", V4) == "/netplug/ips/blue/10.244.1.0/24/"
    assert Attachments.host_prefix("blue", "h1") == "/netplug/attachments/blue/h1/"
    under = Ips.block_prefix("blue", V4)
    assert Ips.addresses([f"{under}10.244.1.7"], under) == {ip_address("10.244.1.7")}


def test_no_kind_nests_under_another() -> None:
    """One prefix per kind, none inside another's (the reserved policies' too): a
    range over one kind never returns another's records."""
    spaces = [
        Blocks.PREFIX,
        Ips.PREFIX,
        Attachments.PREFIX,
        Networks.PREFIX,
        NetworkRegistry.KEY,
        Vteps.PREFIX,
        Hosts.PREFIX,
        Identity.KEY,
        Names.PREFIX,
        Policies.PREFIX,
        PolicyDeleted.KEY,
        Enforcement.PREFIX,
    ]
    assert all(space.startswith(ROOT) for space in spaces)
    assert not [(a, b) for a in spaces for b in spaces if a != b and b.startswith(a)]
    assert set(FOLLOWED) == {Attachments.PREFIX, Blocks.PREFIX, Names.PREFIX}


ATTACHMENT = Attachment(
    "blue",
    "node-1",
    "c1",
    "eth0",
    (
        Allocation(ip_interface("10.244.1.7/24"), ip_address("10.244.1.1"), V4),
        Allocation(ip_interface("fd00:0:0:1::7/64"), ip_address("fd00:0:0:1::1"), V6),
    ),
    ("web",),
    "/run/netns/x",
)

# kind, a record, its bytes in the store, extra arguments of decode
RECORDS = [
    (Blocks, "node-1", b'{"host":"node-1"}', ()),
    (
        Ips,
        AddressOwner("node-1", "c1", "eth0"),
        b'{"containerID":"c1","host":"node-1","ifname":"eth0"}',
        (),
    ),
    (
        Attachments,
        ATTACHMENT,
        b'{"containerID":"c1","ifname":"eth0","ips":['
        b'{"address":"10.244.1.7/24","block":"10.244.1.0/24","gateway":"10.244.1.1"},'
        b'{"address":"fd00:0:0:1::7/64","block":"fd00:0:0:1::/64","gateway":"fd00:0:0:1::1"}],'
        b'"names":["web"],"netns":"/run/netns/x"}',
        ("blue", "node-1"),
    ),
    (
        Networks,
        NetworkRecord("10.244.0.0/16", "", 4242, "netplug.internal", 24, 0),
        b'{"block_prefix":24,"block_prefix6":0,"domain":"netplug.internal","isolate":true,'
        b'"subnet":"10.244.0.0/16","subnet6":"","vni":4242}',
        (),
    ),
    (NetworkRegistry, "blue", b'{"network":"blue"}', ()),
    (
        Vteps,
        VtepRecord("192.0.2.11", "02:00:00:00:00:01", 4242),
        b'{"mac":"02:00:00:00:00:01","vni":4242,"vtep":"192.0.2.11"}',
        (),
    ),
    (
        Hosts,
        HostRecord("192.0.2.11", "boot/4026531840", 1700000000),
        b'{"instance":"boot/4026531840","since":1700000000,"vtep":"192.0.2.11"}',
        (),
    ),
    (Identity, "5f2c", b'{"id":"5f2c"}', ()),
    (Names, {"addresses": ["10.1.2.3"], "ttl": 30}, b'{"addresses":["10.1.2.3"],"ttl":30}', ()),
    (
        Policies,
        Policy("db-in", "blue", ("db",), ingress=()),
        b'{"ingress":[],"name":"db-in","network":"blue","select":{"names":["db"]}}',
        (),
    ),
    (PolicyDeleted, "db-in", b'{"policy":"db-in"}', ()),
    (
        Enforcement,
        EnforcementRecord(42, HostCounters({"db-in": Counts(12, 3)}, 7), "nft refused"),
        b'{"counters":{"db-in":[12,3]},"error":"nft refused","isolationDropped":7,"revision":42}',
        (),
    ),
    (
        Enforcement,
        EnforcementRecord(None, HostCounters()),
        b'{"counters":{},"error":"","isolationDropped":0,"revision":null}',
        (),
    ),
]


@pytest.mark.parametrize(("kind", "record", "value", "where"), RECORDS)
def test_records_round_trip(kind, record, value, where) -> None:
    assert kind.encode(record) == value
    assert kind.decode(value, *where) == record


def test_hand_written_records_keep_working() -> None:
    """Records an older writer or a person left: spaces, and a host without instance."""
    assert Hosts.decode(b'{"vtep": "192.0.2.2"}') == HostRecord("192.0.2.2", "", 0)
    assert Blocks.decode(b'{"host": "h1"}') == "h1"
    legacy = b'{"containerID": "c1", "ifname": "eth0", "ips": []}'  # before names and netns
    assert Attachments.decode(legacy, "blue", "h1") == Attachment("blue", "h1", "c1", "eth0", ())


@pytest.mark.parametrize(
    ("kind", "key"),
    [
        (Blocks, "/netplug/blocks/blue"),
        (Blocks, "/netplug/blocks/blue/not-a-cidr/24"),
        (Blocks, "/netplug/blocks/blue/10.244.1.5/24"),  # host bits set: not a block
        (Blocks, "/netplug/blocks//10.244.1.0/24"),
        (Blocks, "/netplug/ips/blue/10.244.1.0/24"),
        (Ips, "/netplug/ips/blue/10.244.1.0/24"),
        (Ips, "/netplug/ips/blue/10.244.1.0/24/nope"),
        (Attachments, "/netplug/attachments/blue/h1/c1"),
        (Attachments, "/netplug/attachments/blue/h1/c1/eth0/extra"),
        (Networks, "/netplug/networks/blue/x"),
        (Networks, "/netplug/networks/"),
        (NetworkRegistry, "/netplug/network-registry/x"),
        (Vteps, "/netplug/vteps/blue"),
        (Hosts, "/netplug/hosts/h1/x"),
        (Identity, "/netplug/identities"),
        (Names, "/netplug/dns/a/b"),
        (Names, "/other/dns/a"),
        (Policies, "/netplug/policies/a/b"),
        (PolicyDeleted, "/netplug/policy-deleted/a"),
        (Enforcement, "/netplug/enforcement/h1/x"),
    ],
)
def test_a_malformed_key_raises_malformed_key(kind, key) -> None:
    with pytest.raises(MalformedKey, match=r"/netplug/|expected"):
        kind.parse(key)


@pytest.mark.parametrize(
    ("kind", "value", "where"),
    [
        (Blocks, b"not json", ()),
        (Blocks, b"\xff\xfe", ()),
        (Blocks, b'["host"]', ()),
        (Blocks, b"{}", ()),
        (Blocks, b'{"host": 7}', ()),
        (Ips, b'{"host": "h1"}', ()),
        (Attachments, b'{"containerID": "c1"}', ("blue", "h1")),
        (Attachments, b'{"containerID": "c1", "ifname": "eth0", "ips": 7}', ("blue", "h1")),
        (Attachments, b'{"containerID":"c1","ifname":"e","ips":[{"address":"x"}]}', ("b", "h")),
        (Networks, b'{"subnet": "10.0.0.0/8"}', ()),
        (Networks, b'{"subnet":"","subnet6":"","vni":1,"domain":"d","color":"red"}', ()),
        (NetworkRegistry, b"{}", ()),
        (Vteps, b"not json", ()),
        (Vteps, b'{"vtep": "192.0.2.1", "mac": "02:00:00:00:00:01"}', ()),
        (Vteps, b'{"vtep": "192.0.2.1", "mac": "02:00:00:00:00:01", "vni": true}', ()),
        (Hosts, b'{"vtep": 7}', ()),
        (Hosts, b'{"since": "yesterday"}', ()),
        (Identity, b"{}", ()),
        (Names, b"[]", ()),
        (Names, b"[" * 100_000, ()),  # deeper than the interpreter recurses
        (Policies, b'{"name": "a"}', ()),
        (Policies, b'[{"name": "a", "network": "b", "select": {}}]', ()),
        (PolicyDeleted, b"{}", ()),
        (Enforcement, b'{"revision": 1}', ()),
        (Enforcement, b'{"revision":"1","counters":{},"isolationDropped":0,"error":""}', ()),
        (Enforcement, b'{"revision":1,"counters":{"a":[1]},"isolationDropped":0,"error":""}', ()),
        (Enforcement, b'{"revision":1,"counters":{"a":[1,-2]},"isolationDropped":0}', ()),
        (Enforcement, b'{"revision":1,"counters":{},"isolationDropped":true,"error":""}', ()),
    ],
)
def test_a_malformed_record_raises_malformed_record(kind, value, where) -> None:
    with pytest.raises(MalformedRecord) as raised:
        kind.decode(value, *where)
    assert str(raised.value).split(" record: ")[0]  # names the kind
    assert isinstance(raised.value, SchemaError) and isinstance(raised.value, ValueError)


def test_one_unreadable_vtep_record_is_skipped_by_the_overlay_with_the_typed_error(store) -> None:
    """What a reader of many records skips and counts (the overlay used to stop
    at a JSONDecodeError)."""
    vtep = VtepRecord("192.0.2.1", "02:00:00:00:00:01", 1)
    store.put(Vteps.key("blue", "h1"), Vteps.encode(vtep))
    store.put(Blocks.key("blue", V4), Blocks.encode("h1"))
    store.put(Vteps.key("blue", "ghost"), b"not json")
    view = view_of(store.range(ROOT, prefix=True).kvs)
    assert view.blocks == {"blue": {V4: "h1"}} and [v.host for v in view.vteps["blue"]] == ["h1"]
    assert view.bad[Vteps.key("blue", "ghost")][1].startswith("MalformedRecord: VTEP record")


# -- no key is built or split outside the schema ---------------------------------------

SCHEMA = "netplug/ipam/schema.py"
# "/" splits that are not of keys: (module, what is split).
NOT_KEYS = {
    ("netplug/cni/local_records.py", "target"),  # a file path under runDir
    ("netplug/lab/cli.py", "p['what']"),  # "host1/netplugd"
}
SPLITS = {"split", "rsplit", "partition", "rpartition"}


def key_handling(tree: ast.AST, where: str) -> list[str]:
    """Where ``tree`` builds or splits a store key by hand."""
    found = []
    for node in ast.walk(tree):
        line = f"{where}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value.startswith(ROOT):
                found.append(f"{line}: a key written out: {node.value!r}")
        elif isinstance(node, ast.JoinedStr | ast.BinOp):
            if any(_is_root(n) for n in ast.walk(node)):
                found.append(f"{line}: a key built on ROOT: {ast.unparse(node)}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if _splits_on_slash(node) and (where, ast.unparse(node.func.value)) not in NOT_KEYS:
                found.append(f"{line}: a key split: {ast.unparse(node)}")
        elif isinstance(node, ast.Subscript) and _slices_a_key(node):
            found.append(f"{line}: a key sliced: {ast.unparse(node)}")
    return found


def _splits_on_slash(call: ast.Call) -> bool:
    first = call.args[0] if call.args else None
    return call.func.attr in SPLITS and isinstance(first, ast.Constant) and first.value == "/"


def _slices_a_key(node: ast.Subscript) -> bool:  # kv.key[len(prefix):]
    return isinstance(node.slice, ast.Slice) and ast.unparse(node.value).endswith("key")


def _is_root(node: ast.AST) -> bool:
    return (isinstance(node, ast.Name) and node.id == "ROOT") or (
        isinstance(node, ast.Attribute) and node.attr == "ROOT"
    )


def package_sources() -> dict[str, str]:
    """The installed package's modules by their path from the package's parent."""
    base = Path(netplug.__file__).parent
    return {
        f"netplug/{path.relative_to(base)}": path.read_text() for path in sorted(base.rglob("*.py"))
    }


def test_no_module_but_the_schema_builds_or_splits_a_key() -> None:
    sources = package_sources()
    assert SCHEMA in sources and "netplug/ipam/allocations.py" in sources
    found = [
        problem
        for where, text in sources.items()
        if where != SCHEMA
        for problem in key_handling(ast.parse(text), where)
    ]
    assert found == [], "use netplug.ipam.schema instead:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "code",
    [
        'prefix = f"{keys.ROOT}vteps/"',
        'key = ROOT + "hosts/" + host',
        'watched = ("/netplug/hosts/",)',
        'network, host = kv.key[len(prefix):].split("/", 1)',
        'network, _, cidr = rest.partition("/")',
        "name = kv.key[len(Names.PREFIX):]",
    ],
)
def test_the_scan_catches_each_way_of_handling_a_key_by_hand(code) -> None:
    assert key_handling(ast.parse(code), "netplug/x.py")


def test_the_scan_lets_the_schema_be_used() -> None:
    code = "watch = store.watch(ROOT, 1)\nkey = Blocks.key(n, b)\nnet, blk = Blocks.parse(kv.key)"
    assert key_handling(ast.parse(code), "netplug/x.py") == []
