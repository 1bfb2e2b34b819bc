"""API registrations: validation of a PUT body and the JSON kept in the store (pure).

A registration names addresses and, optionally, SRV services and a TTL::

    {"addresses": ["10.1.2.3", "fd00::3"], "ttl": 30,
     "srv": [{"service": "_http._tcp", "port": 8080, "priority": 0, "weight": 0}]}

``parse_registration`` is the one gate: what it returns is valid, what it
rejects raises ``InvalidRegistration`` with a message fit for an HTTP 400.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address

from netplug.ipam.schema import Names
from netplug.names import is_dns_label

Address = IPv4Address | IPv6Address

MAX_ADDRESSES = 64
MAX_SRV = 16
MAX_TTL = 365 * 24 * 3600
MAX_NAME = 253  # presentation length of a whole name, without the trailing dot
MAX_DIGITS = 20  # of a number in a body: every field fits in far fewer
SHOWN = 64  # characters of a refused value quoted back in an error message
FIELDS = ("addresses", "ttl", "srv")
SRV_FIELDS = ("service", "port", "priority", "weight")


class InvalidRegistration(ValueError):
    """A name or body the API refuses; the message says what to change."""


@dataclass(frozen=True, slots=True)
class Srv:
    service: str  # "_http._tcp"
    port: int
    priority: int = 0
    weight: int = 0


@dataclass(frozen=True, slots=True)
class Registration:
    name: str  # relative to the domain, lower-case: "api", "db.prod"
    addresses: tuple[Address, ...]
    ttl: int | None = None  # seconds until it expires unless PUT again; None: never
    srv: tuple[Srv, ...] = ()

    def record(self) -> dict:
        out: dict = {"addresses": [str(a) for a in self.addresses]}
        if self.ttl is not None:
            out["ttl"] = self.ttl
        if self.srv:
            out["srv"] = [
                {"service": s.service, "port": s.port, "priority": s.priority, "weight": s.weight}
                for s in self.srv
            ]
        return out

    def encode(self) -> bytes:
        return Names.encode(self.record())


def parse_name(name: str, domain: str) -> str:
    """The registry name for ``name``, relative to ``domain``, lower-cased.

    A name that ends with a dot is fully qualified, as in a zone file: it must
    end with ``.<domain>.``, which is dropped (``x.example.org.`` outside the
    domain is refused). A name without one is relative to the domain; a
    trailing ``.<domain>`` is accepted and dropped. Each label must be a DNS
    label (letters, digits, hyphens).
    """
    text = name.strip().lower()
    qualified = text.endswith(".")
    text = text.removesuffix(".")
    inside = text == domain or text.endswith("." + domain)
    if qualified and not inside:
        raise InvalidRegistration(
            f"name {_shown(name)} ends with a dot, so it is fully qualified, and it is not "
            f"inside {domain}: give a name relative to {domain} such as 'api', or one "
            f"ending in '.{domain}.'"
        )
    rel = "" if text == domain else text.removesuffix("." + domain)
    if not rel:
        raise InvalidRegistration(
            f"name {_shown(name)} is empty: give a name such as 'api' or 'db.prod'"
        )
    bad = [label for label in rel.split(".") if not is_dns_label(label)]
    if bad:
        raise InvalidRegistration(
            f"name {_shown(name)}: {_shown(bad[0])} is not a DNS label: use 1-63 letters, "
            "digits and hyphens per label, not starting or ending with a hyphen"
        )
    if len(rel) + 1 + len(domain) > MAX_NAME:
        raise InvalidRegistration(
            f"name {_shown(name)} is too long: with .{domain} it must stay within "
            f"{MAX_NAME} characters"
        )
    return rel


def decode_body(raw: bytes) -> object:
    """The JSON document of a request body; raises InvalidRegistration saying why
    it is none. Bounded whatever is sent: nesting past the interpreter's
    recursion limit, integers longer than ``MAX_DIGITS``, and NaN or Infinity
    (not JSON) are refused rather than parsed."""
    try:
        return json.loads(raw, parse_int=_bounded_int, parse_constant=_no_constant)
    except InvalidRegistration:
        raise
    except RecursionError:
        raise InvalidRegistration(
            "the body is nested too deeply: a registration is an object whose "
            '"srv" list holds objects, e.g. {"addresses": ["10.1.2.3"]}'
        ) from None
    except ValueError as e:  # UnicodeDecodeError too
        raise InvalidRegistration(
            f'the body is not JSON ({e}): send {{"addresses": ["10.1.2.3"]}}'
        ) from None


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise InvalidRegistration(
            f"the number {_shown(text)} is too large: no field takes more than {MAX_DIGITS} digits"
        )
    return int(text)


def _no_constant(text: str) -> float:
    raise InvalidRegistration(f"{text} is not JSON: give a number")


def _shown(value: object) -> str:
    """``value`` for an error message: lists and objects by kind (a body may nest
    them hundreds deep), other values cut to ``SHOWN`` characters."""
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    text = repr(value)
    return text if len(text) <= SHOWN else f"{text[:SHOWN]}... ({len(text)} characters)"


def parse_registration(name: str, body: object, domain: str) -> Registration:
    """Validate a PUT body for ``name``; raises InvalidRegistration."""
    registration = _registration(parse_name(name, domain), body)
    for s in registration.srv:  # each SRV owner must be a name a client can ask for
        owner = f"{s.service}.{registration.name}.{domain}"
        if len(owner) > MAX_NAME:
            raise InvalidRegistration(
                f"name {_shown(name)} is too long for SRV records: {s.service}.NAME.{domain} "
                f"must stay within {MAX_NAME} characters, and is {len(owner)}"
            )
    return registration


def decode_registration(name: str, value: bytes) -> Registration:
    """The registration stored under the registry name ``name``; raises
    InvalidRegistration, or MalformedRecord for a value that is not a JSON object."""
    return _registration(name, Names.decode(value))


def _registration(rel: str, body: object) -> Registration:
    if not isinstance(body, dict):
        raise InvalidRegistration('the body must be a JSON object: {"addresses": ["10.1.2.3"]}')
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise InvalidRegistration(
            f"unknown field {_shown(unknown[0])}: a registration has {', '.join(FIELDS)}"
        )
    return Registration(
        rel, _addresses(body.get("addresses")), _ttl(body.get("ttl")), _srvs(body.get("srv", []))
    )


def _addresses(value: object) -> tuple[Address, ...]:
    if not isinstance(value, list) or not value:
        raise InvalidRegistration(
            '"addresses" must be a non-empty list of IP addresses: ["10.1.2.3", "fd00::3"]'
        )
    if len(value) > MAX_ADDRESSES:
        raise InvalidRegistration(f'"addresses" holds {len(value)}: at most {MAX_ADDRESSES}')
    found = []
    for i, item in enumerate(value):
        try:
            if not isinstance(item, str) or "%" in item:  # a zone index: no DNS record has one
                raise ValueError
            found.append(ip_address(item))
        except ValueError:
            raise InvalidRegistration(
                f'"addresses"[{i}] = {_shown(item)} is not an IPv4 or IPv6 address'
            ) from None
    return tuple(dict.fromkeys(found))


def _ttl(value: object) -> int | None:
    if value is None:
        return None
    if not _is_int(value) or not 0 < value <= MAX_TTL:
        raise InvalidRegistration(
            f'"ttl" = {_shown(value)}: give whole seconds from 1 to {MAX_TTL}, or leave it out '
            "for a name that never expires"
        )
    return value


def _srvs(value: object) -> tuple[Srv, ...]:
    if not isinstance(value, list):
        raise InvalidRegistration('"srv" must be a list: [{"service": "_http._tcp", "port": 8080}]')
    if len(value) > MAX_SRV:
        raise InvalidRegistration(f'"srv" holds {len(value)} services: at most {MAX_SRV}')
    return tuple(dict.fromkeys(_srv(i, item) for i, item in enumerate(value)))


def _srv(i: int, item: object) -> Srv:
    where = f'"srv"[{i}]'
    if not isinstance(item, dict):
        raise InvalidRegistration(f'{where} must be an object: {{"service": "_http._tcp", ...}}')
    unknown = sorted(set(item) - set(SRV_FIELDS))
    if unknown:
        raise InvalidRegistration(
            f"{where}: unknown field {_shown(unknown[0])}: use {', '.join(SRV_FIELDS)}"
        )
    service = item.get("service")
    labels = service.split(".") if isinstance(service, str) else []
    if len(labels) != 2 or not all(
        label.startswith("_") and is_dns_label(label[1:]) for label in labels
    ):
        raise InvalidRegistration(
            f"{where}: service {_shown(service)} must be _SERVICE._PROTO, e.g. _http._tcp"
        )
    port = item.get("port")
    if not _is_int(port) or not 0 < port < 65536:
        raise InvalidRegistration(f"{where}: port {_shown(port)} must be a number from 1 to 65535")
    extra = {}
    for field in ("priority", "weight"):
        v = item.get(field, 0)
        if not _is_int(v) or not 0 <= v < 65536:
            raise InvalidRegistration(
                f"{where}: {field} {_shown(v)} must be a number from 0 to 65535"
            )
        extra[field] = v
    return Srv(service.lower(), port, **extra)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
