"""Policy documents: JSON (one object or a list) in, validated immutable ``Policy``s out.

Pure. The whole document is checked before anything is returned, and every bad
field is reported, each as "PATH: expected WHAT, got VALUE" where PATH is the
field's JSON path (``[2].ingress[0].ports[1].port``; no leading index for a
single object). ``parse`` raises ``PolicyError`` carrying all of them.

Decisions (README, "Segmentation and policy"):
- a document holds at most ``MAX_DOCUMENT`` bytes (1 MiB: 1000 large policies);
- a policy name is an ID (``netplug.names.ID_RULE``) of at most 63 characters,
  no globs: it names nftables objects and a store key;
- ``names`` are globs over DNS labels: letters, digits, "-", and ``*`` (any run)
  or ``?`` (one character); matched case-insensitively;
- protocols: tcp, udp, sctp (with or without ports), icmp (ICMP and ICMPv6, no
  ports); ``protocol`` defaults to tcp, as in Kubernetes;
- a port is 1-65535; ``endPort`` (>= ``port``) makes a range, as in Kubernetes;
  named ports do not exist here;
- a peer is ``{"names"}``, ``{"network"}``, ``{"network", "names"}`` or
  ``{"cidr"}``; an absent or empty ``from``/``to`` means every peer.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Collection
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any

from netplug.names import ID_RULE, NETWORK_NAME_RULE, is_id, is_network_name

MAX_DOCUMENT = 1 << 20
NAME_MAX = 63
PROTOCOLS = ("tcp", "udp", "sctp", "icmp")
PORTED = ("tcp", "udp", "sctp")
PORT_MAX = 65535
GLOB_RULE = 'a glob of 1 to 63 letters, digits, "-", "*" or "?"'

Network = IPv4Network | IPv6Network


class PolicyError(ValueError):
    """A document that is not a valid policy set; ``errors`` lists every problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass(frozen=True, slots=True)
class Port:
    protocol: str  # one of PROTOCOLS
    port: int | None = None  # None: every port of the protocol
    end_port: int | None = None  # inclusive end of a range


@dataclass(frozen=True, slots=True)
class Peer:
    """Containers (``names`` globs in ``network``; no globs: all of it) or a ``cidr``."""

    network: str | None = None  # None with names: the policy's own network
    names: tuple[str, ...] = ()
    cidr: Network | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    peers: tuple[Peer, ...] = ()  # empty: every peer
    ports: tuple[Port, ...] = ()  # empty: every protocol and port


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    network: str
    select: tuple[str, ...] | None = None  # None: every container of the network
    ingress: tuple[Rule, ...] | None = None  # None: inbound untouched by this policy
    egress: tuple[Rule, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        """The normalized document (parses back to an equal Policy)."""
        doc: dict[str, Any] = {"name": self.name, "network": self.network}
        doc["select"] = {} if self.select is None else {"names": list(self.select)}
        for key, rules in (("ingress", self.ingress), ("egress", self.egress)):
            if rules is not None:
                peer_key = "from" if key == "ingress" else "to"
                doc[key] = [_rule_json(r, peer_key) for r in rules]
        return doc


def _rule_json(rule: Rule, peer_key: str) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    if rule.peers:
        doc[peer_key] = [_peer_json(p) for p in rule.peers]
    if rule.ports:
        doc["ports"] = [_port_json(p) for p in rule.ports]
    return doc


def _peer_json(peer: Peer) -> dict[str, Any]:
    if peer.cidr is not None:
        return {"cidr": str(peer.cidr)}
    doc: dict[str, Any] = {}
    if peer.network is not None:
        doc["network"] = peer.network
    if peer.names:
        doc["names"] = list(peer.names)
    return doc


def _port_json(port: Port) -> dict[str, Any]:
    doc: dict[str, Any] = {"protocol": port.protocol}
    if port.port is not None:
        doc["port"] = port.port
    if port.end_port is not None:
        doc["endPort"] = port.end_port
    return doc


def name_pattern(globs: Collection[str]) -> re.Pattern[str]:
    """One pattern for any of ``globs`` (lower-case, as parsed); match it against a
    lower-cased name: names match case-insensitively, like DNS."""
    return re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs))


# -- parsing ------------------------------------------------------------------------


def too_big(size: int | None) -> str:
    """The error for a document of ``size`` bytes (None: unknown, over the limit)."""
    got = "more" if size is None else f"{size} bytes"
    return f"document: expected at most {MAX_DOCUMENT} bytes (1 MiB), got {got}"


def parse(data: bytes | str, networks: Collection[str] | None) -> tuple[Policy, ...]:
    """The policies of a JSON document (one object or a list), checked against the
    known ``networks`` (None: any network name, for records read back from the
    store). Raises PolicyError listing every problem."""
    size = len(data.encode() if isinstance(data, str) else data)
    if size > MAX_DOCUMENT:
        raise PolicyError([too_big(size)])
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PolicyError([f"document: expected JSON, got {e}"]) from None
    except RecursionError:  # nested deeper than the interpreter recurses
        raise PolicyError(["document: expected JSON nested less deeply"]) from None
    return parse_document(doc, networks)


def parse_document(doc: object, networks: Collection[str] | None) -> tuple[Policy, ...]:
    """As ``parse``, over an already decoded document."""
    checker = _Checker(None if networks is None else frozenset(networks))
    if isinstance(doc, list):
        if not doc:
            raise PolicyError(["document: expected a policy object or a non-empty list, got []"])
        policies = [checker.policy(item, f"[{i}]") for i, item in enumerate(doc)]
    else:
        policies = [checker.policy(doc, "")]
    seen: dict[str, str] = {}
    for i, p in enumerate(policies):
        where = f"[{i}]" if isinstance(doc, list) else ""
        if p is not None and p.name in seen:
            checker.error(
                _join(where, "name"), f"a name not used before (also {seen[p.name]})", p.name
            )
        elif p is not None:
            seen[p.name] = where or "the document"
    if checker.errors:
        raise PolicyError(checker.errors)
    return tuple(p for p in policies if p is not None)


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _show(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Checker:
    """Collects errors while building; each method returns None where it failed."""

    def __init__(self, networks: frozenset[str] | None) -> None:
        self.networks = networks
        self.errors: list[str] = []

    def error(self, path: str, expected: str, got: object) -> None:
        self.errors.append(f"{path or 'document'}: expected {expected}, got {_show(got)}")

    def obj(self, value: object, path: str, allowed: Collection[str], what: str) -> dict | None:
        if not isinstance(value, dict):
            self.error(path, what, value)
            return None
        for key in value:
            if key not in allowed:
                self.errors.append(
                    f"{_join(path, key)}: unknown field (known: {', '.join(allowed)})"
                )
        return value

    def list_of(self, value: object, path: str, what: str) -> list | None:
        if not isinstance(value, list):
            self.error(path, f"a list of {what}", value)
            return None
        return value

    def policy(self, value: object, path: str) -> Policy | None:
        fields = ("name", "network", "select", "ingress", "egress")
        doc = self.obj(value, path, fields, "a policy object")
        if doc is None:
            return None
        before = len(self.errors)
        name = self.policy_name(doc.get("name"), _join(path, "name"))
        network = self.network(doc.get("network"), _join(path, "network"), required=True)
        select = self.select(doc.get("select"), _join(path, "select"))
        ingress = self.rules(doc, "ingress", "from", path)
        egress = self.rules(doc, "egress", "to", path)
        if len(self.errors) > before:
            return None
        return Policy(name, network, select, ingress, egress)

    def policy_name(self, value: object, path: str) -> str:
        if not (isinstance(value, str) and is_id(value) and len(value) <= NAME_MAX):
            self.error(path, f"a policy name of 1 to {NAME_MAX} {ID_RULE} (no globs)", value)
            return ""
        return value

    def network(self, value: object, path: str, required: bool) -> str | None:
        if value is None and not required:
            return None
        if not isinstance(value, str) or not is_network_name(value):
            self.error(path, f"a network name ({NETWORK_NAME_RULE})", value)
        elif self.networks is not None and value not in self.networks:
            known = ", ".join(sorted(self.networks)) or "none recorded yet"
            self.error(path, f"a known network (known: {known})", value)
        return value if isinstance(value, str) else None

    def select(self, value: object, path: str) -> tuple[str, ...] | None:
        doc = self.obj(
            value, path, ("names",), "a selector object (required; {} selects every container)"
        )
        if doc is None or "names" not in doc:
            return None
        return self.globs(doc["names"], _join(path, "names"))

    def globs(self, value: object, path: str) -> tuple[str, ...]:
        items = self.list_of(value, path, "name globs")
        if items is None:
            return ()
        if not items:
            self.error(path, "at least one name glob (select {} for every container)", value)
        found = []
        for i, g in enumerate(items):
            if not _is_glob(g):
                self.error(_join(path, i), GLOB_RULE, g)
            else:
                found.append(g.lower())
        return tuple(found)

    def rules(self, doc: dict, key: str, peer_key: str, path: str) -> tuple[Rule, ...] | None:
        if key not in doc:
            return None
        items = self.list_of(doc[key], _join(path, key), f"{key} rules ([] allows nothing)")
        if items is None:
            return ()
        return tuple(
            self.rule(r, _join(_join(path, key), i), peer_key) for i, r in enumerate(items)
        )

    def rule(self, value: object, path: str, peer_key: str) -> Rule:
        doc = self.obj(value, path, (peer_key, "ports"), "a rule object")
        if doc is None:
            return Rule()
        peers, ports = [], []
        if peer_key in doc:
            items = self.list_of(doc[peer_key], _join(path, peer_key), "peers") or []
            peers = [self.peer(p, _join(_join(path, peer_key), i)) for i, p in enumerate(items)]
        if "ports" in doc:
            items = self.list_of(doc["ports"], _join(path, "ports"), "ports") or []
            ports = [self.port(p, _join(_join(path, "ports"), i)) for i, p in enumerate(items)]
        return Rule(tuple(p for p in peers if p), tuple(p for p in ports if p))

    def peer(self, value: object, path: str) -> Peer | None:
        doc = self.obj(value, path, ("names", "network", "cidr"), "a peer object")
        if doc is None:
            return None
        if "cidr" in doc:
            if len(doc) > 1:
                self.error(path, '"cidr" alone (names and network select containers)', doc)
                return None
            return self.cidr(doc["cidr"], _join(path, "cidr"))
        if not doc:
            self.error(path, 'one of "names", "network" or "cidr"', doc)
            return None
        network = self.network(doc.get("network"), _join(path, "network"), required=False)
        names = self.globs(doc["names"], _join(path, "names")) if "names" in doc else ()
        return Peer(network=network, names=names)

    def cidr(self, value: object, path: str) -> Peer | None:
        try:
            if not isinstance(value, str):
                raise ValueError
            return Peer(cidr=ip_network(value, strict=True))
        except ValueError:
            self.error(
                path, 'a CIDR with no host bits set ("192.0.2.0/24", "2001:db8::/32")', value
            )
            return None

    def port(self, value: object, path: str) -> Port | None:
        doc = self.obj(value, path, ("protocol", "port", "endPort"), "a port object")
        if doc is None:
            return None
        protocol = doc.get("protocol", "tcp")
        if not isinstance(protocol, str) or protocol.lower() not in PROTOCOLS:
            self.error(_join(path, "protocol"), f"one of {', '.join(PROTOCOLS)}", protocol)
            return None
        protocol = protocol.lower()
        port = self.number(doc, "port", path)
        end = self.number(doc, "endPort", path)
        if protocol not in PORTED and (port is not None or end is not None):
            self.error(
                _join(path, "port"), f"no port with {protocol}", doc.get("port", doc.get("endPort"))
            )
            return None
        if end is not None and port is None:
            self.error(_join(path, "port"), "a port where endPort is set", None)
            return None
        if end is not None and port is not None and end < port:
            self.error(_join(path, "endPort"), f"a port from {port} (the range's start) up", end)
            return None
        return Port(protocol, port, end)

    def number(self, doc: dict, key: str, path: str) -> int | None:
        value = doc.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= PORT_MAX:
            self.error(_join(path, key), f"a port number from 1 to {PORT_MAX}", value)
            return None
        return value


def _is_glob(value: object) -> bool:
    return (
        isinstance(value, str)
        and 0 < len(value) <= 63
        and value.isascii()
        and all(c.isalnum() or c in "-*?" for c in value)
    )
