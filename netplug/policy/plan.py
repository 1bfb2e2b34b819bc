"""The enforcement plan: policies, networks and containers in, nftables text out.

Pure: ``compile_plan`` turns policies and networks into a ``Plan`` (the rules,
and selectors that say which containers feed which sets); ``Plan.dataplane``
adds the containers to give the ``Dataplane`` a host should have (``desired``
does both), and ``Plan.elements`` one container's share, so that an ADD or DEL
costs the selectors of its network, not a new plan (``add_elements``,
``delete_elements``, ``Dataplane.plus``/``minus``). ``render`` turns a
``Dataplane`` into one ``nft -f`` batch that replaces netplug's table; ``delta``
into the batch that turns one ``Dataplane`` into the next: set elements only
while the rules stay, else every chain rewritten in place with counters kept;
``from_listing`` reads what is programmed back from ``nft -j`` (an agent's
start). Every batch is one kernel transaction: no moment without rules.

How packets flow (``netplug/net/``): each network has a bridge on each host
(its containers' veths, the block's gateway address) and a VXLAN device; a
container's traffic to another block - another network on this host, or any
block of another host (an onlink route via that network's VXLAN device) - is
routed by the host, so it crosses the ``forward`` hook. Traffic between two
containers of one bridge is bridged: it reaches the ``inet`` forward hook only
through br_netfilter, so netplug sets ``nf_call_iptables``/``nf_call_ip6tables``
on its bridges (and on nobody else's). Traffic to or from the host itself
(DNS on the gateway, health checks, portmap's DNAT from the host) crosses the
input/output hooks, which netplug never filters.

Everything lives in one table, ``inet netplug`` (never another program's):

    chain forward  (hook forward, policy accept; netplug only ever drops)
      ct state related accept; ct state established ct direction reply accept
      ct state established, ct mark (under GEN_MASK) == the generation: accept
      ICMPv6 neighbour discovery accept
      jump isolation                  cross-network drops, holes for policies
      ip saddr vmap @out4 ...         local containers with egress policies
      ip daddr vmap @in4 ...          local containers with ingress policies
      ct mark set (under GEN_MASK) the generation: judged and not dropped
    chain isolation   ct status dnat return (published ports); per isolated network:
                      from its subnets to another isolated subnet: jump cross
    chain cross       policy holes (peers naming another network) return; drop
    chain in/NET, out/NET   per network: each policy's allow rules (return),
                      each selecting policy's dropped counter, drop

A network is "isolated" unless its config says ``"isolate": false``; traffic
between two isolated networks is dropped (netavark's ``isolate`` semantics),
classified by the source and destination subnets, so it holds the same on a
container's host, over the overlay, and on the receiving host. A connection
is judged at its first packet and keeps the verdict in its conntrack mark as
the rules' generation (derived from their digest: ``settled``); its later
original-direction packets take the fast path while that generation is in
force, so a change of rules (a policy, a network's isolation) has every
connection judged again at its next packet, and a tightened policy cuts what
it no longer allows. Set elements (containers) do not change the generation:
the conntrack entries of an address that leaves a set, or changes owner in
one, are deleted instead (``departures``). Replies always pass.

Sets, as Calico's Felix keeps ipsets: each policy's selected containers
(``pol/NAME/sel4``) and each rule's named peers (``pol/NAME/in0/names4``) hold
addresses of every host's containers; the dispatch maps (``in4``, ``out4``)
hold this host's governed containers only, so each host judges its own
containers' traffic once. A container coming or going changes set elements
only: ``delta`` yields ``add element``/``delete element`` and no rule.
Counters ``pol/NAME/allowed`` and ``pol/NAME/dropped`` are named objects the
agent can read (``nft -j list counters table inet netplug``).
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv6Address, collapse_addresses

from netplug.policy.model import PORTED, Network, Policy, Port, Rule, name_pattern

TABLE = "inet netplug"
FAMILIES = {4: ("ip", "ipv4_addr"), 6: ("ip6", "ipv6_addr")}
ICMP = {4: "icmp", 6: "ipv6-icmp"}
DIRECTIONS = {"ingress": ("in", "daddr", "saddr"), "egress": ("out", "saddr", "daddr")}
ISOLATION_DROPPED = "isolation/dropped"
FAST_PATH = "established/fast"  # named counter: original-direction packets not judged again
GEN_MASK = 0xFFFFFF00  # the ct mark bits netplug owns (README "Segmentation and policy")
GEN = "$generation"  # in chains' rules: the generation, written by ``_rules``
STAMP = "$stamp"  # in chains' rules: the comment that records it (``from_listing``)
_STAMPED = re.compile(r"generation (0x[0-9a-f]{8}) of rules ([0-9a-f]{64})")
BASE_CHAIN = "forward"
BASE_SPEC = "type filter hook forward priority filter; policy accept;"
ND_TYPES = "nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert"

Address = IPv4Address | IPv6Address
Share = dict[str, frozenset[str]]  # a container's set elements, by set name (``Plan.elements``)


@dataclass(frozen=True, slots=True)
class NetworkInfo:
    name: str
    subnets: tuple[Network, ...]
    isolate: bool = True


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A container's attachment to a network, on any host."""

    network: str
    host: str
    addresses: tuple[Address, ...]
    names: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class SetSpec:
    kind: str  # "set", or "map" (to verdicts)
    type: str  # ipv4_addr | ipv6_addr
    interval: bool = False

    def declaration(self) -> str:
        data = " : verdict" if self.kind == "map" else ""
        flags = " flags interval;" if self.interval else ""
        return f"{{ type {self.type}{data};{flags} }}"


@dataclass(frozen=True, slots=True)
class Dataplane:
    """netplug's table as data: what ``render`` writes and ``delta`` compares."""

    sets: Mapping[str, SetSpec]  # every set and map, by name
    counters: frozenset[str]  # named counters
    chains: Mapping[str, tuple[str, ...] | None]  # rules in order; None: not known
    members: Mapping[str, frozenset[str]]  # every set's or map's elements, as nft text
    generation: int = 0  # the ct mark (under GEN_MASK) of connections judged by these rules
    digest: str = ""  # sha256 of the chains' rules ("": not known)

    def plus(self, elements: Mapping[str, frozenset[str]]) -> Dataplane:
        """With ``elements`` (a container's: ``Plan.elements``) added."""
        merged = dict(self.members)
        for name, items in elements.items():
            merged[name] = merged[name] | items
        return replace(self, members=merged)

    def minus(self, elements: Mapping[str, frozenset[str]]) -> Dataplane:
        """With ``elements`` removed (addresses are a container's own: no other
        container contributes the same element)."""
        merged = dict(self.members)
        for name, items in elements.items():
            merged[name] = merged[name] - items
        return replace(self, members=merged)


@dataclass(frozen=True, slots=True)
class _Selector:
    """Which containers feed a pair of dynamic sets (v4, v6) with their addresses."""

    sets: tuple[str, str]
    pattern: re.Pattern[str] | None  # over lower-cased names; None: every container
    local: bool = False  # this host's containers only (the dispatch maps)
    verdict: str = ""  # a map's data: " : jump CHAIN"

    def covers(self, e: Endpoint, me: str) -> bool:
        if self.local and e.host != me:
            return False
        return self.pattern is None or any(self.pattern.match(n.lower()) for n in e.names)


@dataclass(frozen=True, slots=True)
class Plan:
    """Policies and networks compiled once: the table without its containers.

    ``dataplane`` adds every container; ``elements`` gives one container's
    share, so that a container coming or going costs the selectors of its own
    network (one regex match each), not a new plan."""

    base: Dataplane  # every set declared, static ones filled, dynamic ones empty
    selectors: Mapping[str, tuple[_Selector, ...]]  # by network

    def elements(self, e: Endpoint, me: str) -> Share:
        """The set elements container ``e`` contributes on host ``me``."""
        found: dict[str, set[str]] = {}
        for sel in self.selectors.get(e.network, ()):
            if sel.covers(e, me):
                for a in e.addresses:
                    found.setdefault(sel.sets[a.version == 6], set()).add(f"{a}{sel.verdict}")
        return {name: frozenset(items) for name, items in found.items()}

    def dataplane(self, endpoints: Iterable[Endpoint], me: str) -> Dataplane:
        return self.filled(self.elements(e, me) for e in endpoints)

    def filled(self, shares: Iterable[Share]) -> Dataplane:
        """The table holding these containers' shares (``elements``, which a caller
        may keep from one batch to the next: filling costs set unions, no regex)."""
        members = {name: set(items) for name, items in self.base.members.items()}
        for share in shares:
            for name, items in share.items():
                members[name] |= items
        return replace(self.base, members={k: frozenset(v) for k, v in members.items()})


def counter_names(policy: str) -> tuple[str, str]:
    """The (allowed, dropped) named counters of a policy."""
    return f"pol/{policy}/allowed", f"pol/{policy}/dropped"


def desired(
    policies: Iterable[Policy],
    networks: Iterable[NetworkInfo],
    endpoints: Iterable[Endpoint],
    me: str,
) -> Dataplane:
    """What host ``me`` should program (``compile`` then ``Plan.dataplane``)."""
    return compile_plan(policies, networks).dataplane(endpoints, me)


def compile_plan(policies: Iterable[Policy], networks: Iterable[NetworkInfo]) -> Plan:
    """The table for these policies and networks, its sets not yet fed with
    containers. Policies of unknown networks, and peers naming one, are left
    out (a network deleted after its policies)."""
    nets = {n.name: n for n in networks}
    b = _Builder(nets)
    b.isolation()
    for p in sorted((p for p in policies if p.network in nets), key=lambda p: p.name):
        b.policy(p)
    b.forward()
    return b.plan()


class _Builder:
    def __init__(self, nets: dict[str, NetworkInfo]) -> None:
        self.nets = nets
        self.selectors: dict[str, list[_Selector]] = defaultdict(list)
        self.sets: dict[str, SetSpec] = {}
        self.counters: set[str] = set()
        self.chains: dict[str, list[str]] = {}
        self.members: dict[str, set[str]] = {}
        self.cross: list[str] = []  # isolation holes
        self.tails: dict[str, list[str]] = defaultdict(list)  # chain -> dropped counters

    # -- isolation -------------------------------------------------------------------

    def isolation(self) -> None:
        """Drop traffic from an isolated network to another isolated one, unless a
        policy hole in ``cross`` returns it. One rule per network and family: rules,
        not an interval verdict map, which nft 1.0.6 cannot fill in the batch that
        creates the chains it jumps to."""
        isolated = [n for _, n in sorted(self.nets.items()) if n.isolate]
        chain = self.chains["isolation"] = ["ct status dnat return"]  # published ports
        for fam, (ip, kind) in FAMILIES.items():
            mine = [(n, s) for n in isolated for s in n.subnets if s.version == fam]
            self._set(f"isolated{fam}", SetSpec("set", kind, True), (str(s) for _, s in mine))
            for n in isolated:
                own = _anon(s for s in n.subnets if s.version == fam)
                if own:
                    chain.append(
                        f"{ip} saddr {own} {ip} daddr @isolated{fam} {ip} daddr != {own} jump cross"
                    )

    def _set(self, name: str, spec: SetSpec, elements: Iterable[str] = ()) -> None:
        self.sets[name] = spec
        self.members.setdefault(name, set()).update(elements)

    def _fed(self, name: str, kind: str, network: str, globs, **how) -> None:
        """Sets ``name``4 and ``name``6, fed by ``network``'s containers matching
        ``globs`` (None: all of them)."""
        for fam, (_, addr_type) in FAMILIES.items():
            self._set(f"{name}{fam}", SetSpec(kind, addr_type))
        pattern = None if globs is None else name_pattern(globs)
        self.selectors[network].append(_Selector((f"{name}4", f"{name}6"), pattern, **how))

    # -- policies --------------------------------------------------------------------

    def policy(self, p: Policy) -> None:
        allowed, dropped = counter_names(p.name)
        self.counters.update((allowed, dropped))
        self._fed(f"pol/{p.name}/sel", "set", p.network, p.select)
        for direction, rules in (("ingress", p.ingress), ("egress", p.egress)):
            if rules is not None:
                self.direction(p, direction, rules)

    def direction(self, p: Policy, direction: str, rules: tuple[Rule, ...]) -> None:
        short, own, peer = DIRECTIONS[direction]
        chain = self.chains.setdefault(f"{short}/{p.network}", [])
        allowed, dropped = counter_names(p.name)
        for i, rule in enumerate(rules):
            names_set = f"pol/{p.name}/{short}{i}/names"
            for pe in rule.peers:
                if pe.names:
                    self._fed(names_set, "set", pe.network or p.network, pe.names)
            for fam, (ip, _) in FAMILIES.items():
                head = f"{ip} {own} @pol/{p.name}/sel{fam}"
                for match in self._peer_matches(p, rule, fam, f"{ip} {peer}", names_set):
                    for ports in _port_clauses(rule.ports, fam):
                        chain.append(_join(head, match, ports, f'counter name "{allowed}" return'))
                for match in self._peer_matches(p, rule, fam, f"{ip} {peer}", names_set, True):
                    for ports in _port_clauses(rule.ports, fam):
                        self.cross.append(_join(head, match, ports, "return"))
        for fam, (ip, _) in FAMILIES.items():
            self.tails[f"{short}/{p.network}"].append(
                f'{ip} {own} @pol/{p.name}/sel{fam} counter name "{dropped}"'
            )
        verdict = f" : jump {short}/{p.network}"
        self._fed(short, "map", p.network, p.select, local=True, verdict=verdict)

    def _peer_matches(
        self, p: Policy, rule: Rule, fam: int, field: str, names_set: str, foreign: bool = False
    ) -> list[str]:
        """The peer matches of one rule in one family: "" for every peer; with
        ``foreign``, only peers naming another network (the isolation holes)."""
        peers = [pe for pe in rule.peers if not foreign or pe.network not in (None, p.network)]
        if not rule.peers:
            return [] if foreign else [""]
        found = []
        if any(pe.names for pe in peers):
            found.append(f"{field} @{names_set}{fam}")
        nets = [
            s
            for pe in peers
            if pe.network in self.nets and not pe.names and pe.cidr is None
            for s in self.nets[pe.network].subnets
            if s.version == fam
        ]
        cidrs = [pe.cidr for pe in peers if pe.cidr is not None and pe.cidr.version == fam]
        for group in (nets, [] if foreign else cidrs):
            if group:
                found.append(f"{field} {_anon(group)}")
        return found

    # -- the table -------------------------------------------------------------------

    def forward(self) -> None:
        rules = [
            "ct state related accept",
            "ct state established ct direction reply accept",
            f"ct state established ct mark and 0x{GEN_MASK:08x} == {GEN}"
            f' counter name "{FAST_PATH}" accept {STAMP}',
            f"icmpv6 type {{ {ND_TYPES} }} accept",
            "jump isolation",
        ]
        for short, field in (("out", "saddr"), ("in", "daddr")):
            for fam, (ip, kind) in FAMILIES.items():
                self._set(f"{short}{fam}", SetSpec("map", kind), ())
                rules.append(f"{ip} {field} vmap @{short}{fam}")
        # Not dropped: judged under this generation, until the rules change. Only
        # netplug's own connections: the host may forward others, whose ct mark
        # bits belong to whoever set them (connmark routing recipes).
        keep = f"ct mark set ct mark and 0x{~GEN_MASK & 0xFFFFFFFF:08x} or {GEN}"
        for fam, (ip, _) in FAMILIES.items():
            ours = _anon(s for n in self.nets.values() for s in n.subnets if s.version == fam)
            if ours:
                rules += [f"{ip} saddr {ours} {keep}", f"{ip} daddr {ours} {keep}"]
        self.counters.add(FAST_PATH)
        self.chains["cross"] = [*self.cross, f'counter name "{ISOLATION_DROPPED}" drop']
        self.counters.add(ISOLATION_DROPPED)
        for chain, tail in self.tails.items():
            self.chains[chain] += [*tail, "drop"]
        self.chains[BASE_CHAIN] = rules

    def plan(self) -> Plan:
        chains = {name: tuple(rules) for name, rules in self.chains.items()}
        digest = _digest(chains)
        base = Dataplane(
            sets=dict(sorted(self.sets.items())),
            counters=frozenset(self.counters),
            chains=chains,
            members={k: frozenset(v) for k, v in sorted(self.members.items())},
            generation=_generation(digest),
            digest=digest,
        )
        return Plan(base, {n: tuple(sels) for n, sels in self.selectors.items()})


def _digest(chains: Mapping[str, tuple[str, ...]]) -> str:
    text = "\n".join(f"{c} {r}" for c, rules in sorted(chains.items()) for r in rules)
    return hashlib.sha256(text.encode()).hexdigest()


def _generation(digest: str) -> int:
    """The generation of these rules: from their digest, so that whoever compiles
    the same rules (a restarted agent, the plugin without one) writes the same
    generation and no connection is judged again for nothing. Never 0 (the
    mark of connections netplug never judged)."""
    return (int(digest[:6], 16) << 8) or 1 << 8


def settled(programmed: Dataplane | None, want: Dataplane | None) -> Dataplane | None:
    """``want`` with the generation to program over ``programmed``: the programmed
    one when the rules are the same (their digest: ``from_listing`` reads it back),
    else one that differs from it even when two digests' generations collide, so
    that a change of rules always has every connection judged again."""
    if programmed is None or want is None or not programmed.generation:
        return want
    if programmed.digest == want.digest:
        return replace(want, generation=programmed.generation)
    if programmed.generation == want.generation:
        following = (want.generation + (1 << 8)) & GEN_MASK
        return replace(want, generation=following or 1 << 8)
    return want


def _anon(nets: Iterable[Network]) -> str:
    """An anonymous interval set, overlapping ranges merged first (nft refuses
    them); "" for no ranges."""
    merged = [str(n) for n in collapse_addresses(sorted(set(nets)))]
    return "{ " + ", ".join(merged) + " }" if merged else ""


def _port_clauses(ports: tuple[Port, ...], fam: int) -> list[str]:
    """One match per protocol (all its ranges in one anonymous set); [""]: any."""
    if not ports:
        return [""]
    by_protocol: dict[str, list[str] | None] = {}
    for port in ports:
        if port.protocol not in PORTED or port.port is None:
            by_protocol[port.protocol] = None  # the whole protocol
        elif by_protocol.get(port.protocol, []) is not None:
            span = (
                str(port.port)
                if port.end_port in (None, port.port)
                else f"{port.port}-{port.end_port}"
            )
            by_protocol.setdefault(port.protocol, []).append(span)
    clauses = []
    for protocol, spans in sorted(by_protocol.items()):
        if protocol == "icmp":
            clauses.append(f"meta l4proto {ICMP[fam]}")
        elif spans is None:
            clauses.append(f"meta l4proto {protocol}")
        else:
            clauses.append(f"{protocol} dport {{ {', '.join(sorted(set(spans), key=_span_key))} }}")
    return clauses


def _span_key(span: str) -> int:
    return int(span.split("-")[0])


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p)


# -- batches ---------------------------------------------------------------------------


def render(dp: Dataplane) -> str:
    """One ``nft -f`` batch that replaces netplug's table whole. The kernel applies a
    batch as one transaction: there is no moment without rules. Counters restart."""
    head = [f"add table {TABLE}", f"delete table {TABLE}", f"add table {TABLE}"]
    fill = [_elements("add", n, items) for n, items in dp.members.items() if items]
    return _batch(head + _declare(dp.sets, dp.counters, dp.chains) + _rules(dp) + fill)


def delta(old: Dataplane | None, new: Dataplane) -> str:
    """The batch that turns ``old`` (what is programmed; None: unknown) into ``new``;
    "" when they are equal.

    Set elements are added and deleted one by one. When any chain's rules differ,
    every chain is flushed and written again in the same batch (atomic: no gap),
    and what ``new`` no longer has is deleted; named counters that stay keep their
    values. With ``old`` None, the table is replaced whole (``render``)."""
    if old is None:
        return render(new)
    changed = {n for n in old.sets.keys() & new.sets.keys() if old.sets[n] != new.sets[n]}
    gone_sets = sorted((old.sets.keys() - new.sets.keys()) | changed)
    rewrite = old.chains != new.chains or bool(gone_sets) or old.generation != new.generation
    lines = [f"flush chain {TABLE} {c}" for c in old.chains] if rewrite else []
    kept = {n: old.members.get(n, frozenset()) for n in new.sets if n in old.sets}
    for n in changed:
        kept[n] = frozenset()
    for name in sorted(kept.keys() - changed):
        gone = kept[name] - new.members[name]
        if gone:  # a map's element is deleted by its key alone
            lines.append(_elements("delete", name, _keys(gone)))
    lines += [f"delete {old.sets[n].kind} {TABLE} {n}" for n in gone_sets]
    lines += [f"delete chain {TABLE} {c}" for c in sorted(old.chains.keys() - new.chains.keys())]
    lines += [f"delete counter {TABLE} {c}" for c in sorted(old.counters - new.counters)]
    lines += _declare(
        {n: spec for n, spec in new.sets.items() if n not in kept or n in changed},
        new.counters - old.counters,
        [c for c in new.chains if c not in old.chains],
    )
    if rewrite:
        lines += _rules(new)
    for name, items in new.members.items():
        added = items - kept.get(name, frozenset())
        if added:
            lines.append(_elements("add", name, added))
    return _batch(lines)


def add_elements(elements: Mapping[str, frozenset[str]]) -> str:
    """The batch that adds a container's ``elements`` (``Plan.elements``): the whole
    kernel work of a container that arrives under unchanged policies."""
    return _batch([_elements("add", n, items) for n, items in sorted(elements.items()) if items])


def delete_elements(elements: Mapping[str, frozenset[str]]) -> str:
    """The batch that deletes a container's ``elements`` (a map's by key)."""
    return _batch(
        [_elements("delete", n, _keys(items)) for n, items in sorted(elements.items()) if items]
    )


def _keys(items: Iterable[str]) -> set[str]:
    return {e.split(" : ")[0] for e in items}


def _declare(
    sets: Mapping[str, SetSpec], counters: Iterable[str], chains: Iterable[str]
) -> list[str]:
    lines = [f"add {spec.kind} {TABLE} {n} {spec.declaration()}" for n, spec in sets.items()]
    lines += [f"add counter {TABLE} {c}" for c in sorted(counters)]
    for chain in chains:
        spec = f" {{ {BASE_SPEC} }}" if chain == BASE_CHAIN else ""
        lines.append(f"add chain {TABLE} {chain}{spec}")
    return lines


def _rules(dp: Dataplane) -> list[str]:
    generation = f"0x{dp.generation:08x}"
    stamp = f'comment "generation {generation} of rules {dp.digest}"'
    return [
        f"add rule {TABLE} {c} {rule.replace(GEN, generation).replace(STAMP, stamp)}"
        for c, rules in dp.chains.items()
        for rule in rules or ()
    ]


def _elements(verb: str, name: str, items: Iterable[str]) -> str:
    return f"{verb} element {TABLE} {name} {{ {', '.join(sorted(items))} }}"


def _batch(lines: list[str]) -> str:
    return "".join(f"{line}\n" for line in lines)


# -- reading back ----------------------------------------------------------------------


def from_listing(listing: Mapping) -> Dataplane:
    """What is programmed, from ``nft -j list table inet netplug`` (decoded): sets,
    counters, chain names and set elements, with every chain's rules unknown (None),
    so that ``delta`` from it writes the rules again and keeps every element and
    counter that is right: an agent's start after a restart (Felix's mark and sweep).
    The generation and the rules' digest are read from the fast-path rule's comment
    (``settled`` then keeps the generation when the rules are the same)."""
    sets, counters, chains, members = {}, set(), {}, {}
    generation, digest = 0, ""
    for item in listing.get("nftables", []):
        for kind in ("set", "map"):
            if kind in item:
                body = item[kind]
                sets[body["name"]] = SetSpec(
                    kind, body["type"], "interval" in body.get("flags", [])
                )
                members[body["name"]] = frozenset(_element(e) for e in body.get("elem", []))
        if "counter" in item:
            counters.add(item["counter"]["name"])
        if "chain" in item:
            chains[item["chain"]["name"]] = None
        stamped = _STAMPED.fullmatch(str(item.get("rule", {}).get("comment", "")))
        if stamped:
            generation, digest = int(stamped[1], 16), stamped[2]
    return Dataplane(sets, frozenset(counters), chains, members, generation, digest)


def _element(e: object) -> str:
    """One element as the plan writes it: an address, a prefix, or "KEY : jump CHAIN"."""
    if isinstance(e, list):
        key, verdict = e
        return f"{_element(key)} : jump {verdict['jump']['target']}"
    if isinstance(e, dict) and "prefix" in e:
        return f"{e['prefix']['addr']}/{e['prefix']['len']}"
    if isinstance(e, dict) and "elem" in e:
        return _element(e["elem"]["val"])
    return str(e)
