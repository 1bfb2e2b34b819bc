"""The CNI result: one version-free model, and its JSON in every spec version.

The plugin builds a `Result` and the entry point prints `to_json(result, version)` in
the config's cniVersion (spec: "emit the result in the cniVersion it was given").
`from_json` reads any version back: prevResult on CHECK/DEL, a delegate's result.

Wire shapes (containernetworking/cni pkg/types/{020,040,100}):
- 0.1.0/0.2.0: {"ip4": {ip, gateway, routes}, "ip6": {...}, "dns"}; one address per family.
- 0.3.0/0.3.1/0.4.0: {"interfaces", "ips", "routes", "dns"}; each ips[] has "version".
- 1.0.0: drops ips[].version. 1.1.0: adds route mtu/advmss/priority/table/scope.
Empty fields are left out, as Go's `omitempty` does.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
)

from netplug.cni.errors import (
    DECODE_FAILURE,
    INCOMPATIBLE_VERSION,
    CNIError,
    expect,
    invalid,
    json_field,
    required_field,
    show,
)
from netplug.cni.netconf import SUPPORTED_VERSIONS

_LEGACY = ("0.1.0", "0.2.0")
_WITH_IP_VERSION = ("0.3.0", "0.3.1", "0.4.0")
_WITH_ROUTE_EXTRAS = ("1.1.0",)
_LEGACY_KEYS = {4: "ip4", 6: "ip6"}

IPAddress = IPv4Address | IPv6Address


@dataclass(frozen=True)
class Interface:
    """An interface the attachment created; `sandbox` is its netns path ("" = host)."""

    name: str
    mac: str = ""
    mtu: int = 0
    sandbox: str = ""


@dataclass(frozen=True)
class IPConfig:
    """An address with its prefix; `interface` indexes Result.interfaces (None in an
    IPAM delegate's abbreviated result)."""

    address: IPv4Interface | IPv6Interface
    gateway: IPAddress | None = None
    interface: int | None = None


@dataclass(frozen=True)
class Route:
    """A route; 0 means "not set" for the 1.1.0 extras, and `scope` None means not set
    (0 is a real scope: global)."""

    dst: IPv4Network | IPv6Network
    gw: IPAddress | None = None
    mtu: int = 0
    advmss: int = 0
    priority: int = 0
    table: int = 0
    scope: int | None = None


@dataclass(frozen=True)
class DNS:
    """The resolver settings offered to the container."""

    nameservers: tuple[str, ...] = ()
    domain: str = ""
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class Result:
    """What an ADD made: interfaces (host side included), addresses, routes, DNS."""

    interfaces: tuple[Interface, ...] = ()
    ips: tuple[IPConfig, ...] = ()
    routes: tuple[Route, ...] = ()
    dns: DNS = DNS()


# --- model -> JSON ---------------------------------------------------------------------


def to_json(result: Result, cni_version: str) -> dict:
    """`result` as the JSON object of spec version `cni_version`.

    Fields the version cannot carry are dropped (0.1.0/0.2.0 keep only the first
    address of each family). Raises CNIError(INCOMPATIBLE_VERSION) for a version
    netplug does not speak.
    """
    if cni_version not in SUPPORTED_VERSIONS:
        raise CNIError(
            INCOMPATIBLE_VERSION,
            f"cannot write a result in cniVersion {show(cni_version)}: "
            f"netplug supports {', '.join(SUPPORTED_VERSIONS)}",
        )
    body = _legacy_json(result) if cni_version in _LEGACY else _current_json(result, cni_version)
    return {"cniVersion": cni_version, **body, **_nonempty(dns=_dns_json(result.dns))}


def _nonempty(**fields: object) -> dict:
    # Go's omitempty: "", 0, false, nil and empty lists/maps are left out.
    return {key: value for key, value in fields.items() if value}


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _current_json(result: Result, cni_version: str) -> dict:
    return _nonempty(
        interfaces=[
            {"name": i.name, **_nonempty(mac=i.mac, mtu=i.mtu, sandbox=i.sandbox)}
            for i in result.interfaces
        ],
        ips=[_ip_json(ip, cni_version in _WITH_IP_VERSION) for ip in result.ips],
        routes=[_route_json(r, cni_version in _WITH_ROUTE_EXTRAS) for r in result.routes],
    )


def _ip_json(ip: IPConfig, with_version: bool) -> dict:
    out: dict = {"version": str(ip.address.version)} if with_version else {}
    # `interface` is a pointer in Go: index 0 is a value, only None is left out.
    if ip.interface is not None:
        out["interface"] = ip.interface
    out["address"] = str(ip.address)
    return out | _nonempty(gateway=_text(ip.gateway))


def _route_json(route: Route, extras: bool) -> dict:
    out = {"dst": str(route.dst), **_nonempty(gw=_text(route.gw))}
    if extras:
        out |= _nonempty(
            mtu=route.mtu, advmss=route.advmss, priority=route.priority, table=route.table
        )
        # `scope` is a pointer in Go: scope 0 (global) is a value, only None is left out.
        if route.scope is not None:
            out["scope"] = route.scope
    return out


def _legacy_json(result: Result) -> dict:
    """0.1.0/0.2.0: the first address of each family, with that family's routes
    (as Go's convertTo02x does)."""
    out = {}
    for family, key in _LEGACY_KEYS.items():
        ip = next((ip for ip in result.ips if ip.address.version == family), None)
        if ip is None:
            continue
        routes = [_route_json(r, False) for r in result.routes if r.dst.version == family]
        out[key] = {"ip": str(ip.address), **_nonempty(gateway=_text(ip.gateway), routes=routes)}
    return out


def _dns_json(dns: DNS) -> dict:
    return _nonempty(
        nameservers=[str(n) for n in dns.nameservers],
        domain=dns.domain,
        search=list(dns.search),
        options=list(dns.options),
    )


# --- JSON -> model ---------------------------------------------------------------------


def from_json(d: dict) -> Result:
    """Parse a result of any supported version (a prevResult or a delegate's output).

    The format follows "cniVersion"; without one it is inferred from the keys ("ip4" or
    "ip6" mean 0.2.0). Unknown keys are ignored. Raises CNIError(DECODE_FAILURE) naming
    the malformed field and its value.
    """
    d = expect(d, dict, "result", DECODE_FAILURE)
    version = json_field(d, "cniVersion", str, "", None, DECODE_FAILURE)
    if version is not None and version not in SUPPORTED_VERSIONS:
        raise invalid("cniVersion", version, "a CNI version netplug knows", DECODE_FAILURE)
    legacy = version in _LEGACY if version else ("ip4" in d or "ip6" in d)
    return _legacy_from(d) if legacy else _current_from(d)


def _current_from(d: dict) -> Result:
    return Result(
        interfaces=_each(d, "interfaces", "", _interface_from),
        ips=_each(d, "ips", "", _ip_from),
        routes=_each(d, "routes", "", _route_from),
        dns=_dns_from(d),
    )


def _legacy_from(d: dict) -> Result:
    ips: list[IPConfig] = []
    routes: list[Route] = []
    for key in _LEGACY_KEYS.values():
        block = _get(d, key, dict, "")
        if block is not None:
            where = key + "."
            ips.append(IPConfig(_parse(block, "ip", where, "cidr"), _gateway(block, where)))
            routes += _each(block, "routes", where, _route_from)
    return Result(ips=tuple(ips), routes=tuple(routes), dns=_dns_from(d))


def _get(obj: dict, key: str, kind: type, where: str, default: object = None):
    return json_field(obj, key, kind, where, default, DECODE_FAILURE)


def _each(obj: dict, key: str, where: str, parse) -> tuple:
    """obj[key] as a list of objects, each parsed by `parse(item, its path + ".")`."""
    parsed = []
    for i, item in enumerate(_get(obj, key, list, where, [])):
        path = f"{where}{key}[{i}]"
        parsed.append(parse(expect(item, dict, path, DECODE_FAILURE), path + "."))
    return tuple(parsed)


def _interface_from(obj: dict, where: str) -> Interface:
    return Interface(
        name=required_field(obj, "name", str, where, DECODE_FAILURE),
        mac=_get(obj, "mac", str, where, ""),
        mtu=_count(obj, "mtu", where),
        sandbox=_get(obj, "sandbox", str, where, ""),
    )


def _ip_from(obj: dict, where: str) -> IPConfig:
    # ips[].version (0.3.x/0.4.0) is redundant with the address itself: ignored.
    interface = _get(obj, "interface", int, where)
    if interface is not None and interface < 0:
        raise invalid(where + "interface", interface, "an index of 0 or more", DECODE_FAILURE)
    return IPConfig(_parse(obj, "address", where, "cidr"), _gateway(obj, where), interface)


def _route_from(obj: dict, where: str) -> Route:
    return Route(
        dst=_parse(obj, "dst", where, "network"),
        gw=_parse(obj, "gw", where, "ip", required=False),
        mtu=_count(obj, "mtu", where),
        advmss=_count(obj, "advmss", where),
        priority=_count(obj, "priority", where),
        table=_count(obj, "table", where),
        scope=_get(obj, "scope", int, where),
    )


def _dns_from(d: dict) -> DNS:
    dns = _get(d, "dns", dict, "", {})

    def strings(key: str) -> tuple[str, ...]:
        items = _get(dns, key, list, "dns.", [])
        return tuple(expect(s, str, f"dns.{key}[{i}]", DECODE_FAILURE) for i, s in enumerate(items))

    return DNS(
        nameservers=strings("nameservers"),
        domain=_get(dns, "domain", str, "dns.", ""),
        search=strings("search"),
        options=strings("options"),
    )


def _count(obj: dict, key: str, where: str) -> int:
    value = _get(obj, key, int, where, 0)
    if value < 0:
        raise invalid(where + key, value, "an integer of 0 or more", DECODE_FAILURE)
    return value


def _gateway(obj: dict, where: str) -> IPAddress | None:
    return _parse(obj, "gateway", where, "ip", required=False)


# kind -> (parser, what should have been written). CIDRs need their "/prefix", as with
# Go's net.ParseCIDR; a route's dst may have host bits set (Go keeps the mask only).
_PARSERS = {
    "cidr": (ipaddress.ip_interface, "an address with its prefix, like 10.244.1.5/24"),
    "network": (
        lambda text: ipaddress.ip_network(text, strict=False),
        "a CIDR like 0.0.0.0/0",
    ),
    "ip": (ipaddress.ip_address, "an IP address like 10.244.1.1"),
}


def _parse(obj: dict, key: str, where: str, kind: str, required: bool = True):
    """obj[key], a string, parsed as `kind` ("cidr", "network" or "ip"); None when
    absent and not `required`."""
    if not required and obj.get(key) is None:
        return None
    text = required_field(obj, key, str, where, DECODE_FAILURE)
    parse, expected = _PARSERS[kind]
    if (kind == "ip") != ("/" in text):
        try:
            return parse(text)
        except ValueError:
            pass  # reported below, with what was expected
    raise invalid(where + key, text, expected, DECODE_FAILURE)
