"""Network configuration parsing: the decoded config and the environment in, a
validated `NetConf` out.

Pure (sans-IO): the caller passes the config (stdin's JSON object) and the environment
mapping (CNI_ARGS, NETPLUG_HOSTNAME), and gets a `NetConf` or a `CNIError` -- never any
other exception. Every check runs here, before anything on the host changes (the bridge
plugin's `loadNetConf` rule). The rules the config shares with the request -- the
cniVersion check, CNI_ARGS, interface names -- live here too, so that
`netplug.cni.request` builds on this module and not the other way round; those for
names that become store keys (network, host, container ID) live in `netplug.names`.

`netplug.cni.request` imports it, so it shares that module's start-up budget: cheap
standard-library imports only (no `re`, `typing` or `socket`; `hashlib` and the store
URL parser load lazily).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
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
    INVALID_CONFIG,
    INVALID_ENV,
    UNSUPPORTED_FIELD,
    CNIError,
    expect,
    invalid,
    json_field,
    required_field,
    show,
)
from netplug.names import (
    HOST_NAME_RULE,
    NETWORK_NAME_RULE,
    is_dns_label,
    is_host_name,
    is_network_name,
)

SUPPORTED_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
# Spec: "assume 0.2.0 when cniVersion is missing".
_DEFAULT_VERSION = "0.2.0"

IFNAME_RULE = (
    'an interface name of 1 to 15 bytes of UTF-8, not "." or "..", without "/", ":" or spaces'
)
_IFNAME_MAX = 15  # IFNAMSIZ - 1
_MTU_MIN = 576  # RFC 791 minimum datagram size every IPv4 host must accept
_VNI_MAX = 2**24 - 1
_PORT_MAX = 65535
_MTU_MAX = 65535
_SUBNET_KEYS = {4: "subnet", 6: "subnet6"}
_SUBNET_EXAMPLES = {4: "10.244.0.0/16", 6: "fd00:244::/48"}
_BLOCK_KEYS = {4: "hostBlockPrefix", 6: "hostBlockPrefix6"}
_MAX_BLOCK_PREFIX = {4: 30, 6: 126}  # a block must hold a gateway and a container

StaticIP = IPv4Interface | IPv6Interface | IPv4Address | IPv6Address
# netplug-ipam's ``routes``: (dst, gw), gw None for "via the family's gateway".
IpamRoute = tuple[IPv4Network | IPv6Network, IPv4Address | IPv6Address | None]


@dataclass(frozen=True)
class VxlanConf:
    """The overlay device: VNI (None: the store assigns one per network), UDP port and
    underlay device (None: the default route's)."""

    vni: int | None = None
    port: int = 4789
    device: str | None = None


@dataclass(frozen=True, kw_only=True)
class NetConf:
    """One network's validated configuration plus the per-container runtime inputs.

    The class-level defaults are the config defaults: the parser falls back to them.
    """

    cni_version: str
    name: str
    type: str = ""
    subnet: IPv4Network
    subnet6: IPv6Network | None = None
    host_block_prefix: int = 24
    host_block_prefix6: int = 64
    vxlan: VxlanConf = VxlanConf()
    mtu: int = 0  # 0: underlay MTU minus the VXLAN overhead
    ip_masq: bool = False
    isolate: bool = True  # a segment: no traffic to or from other isolated networks
    autostart_agent: bool = True  # agent.autostart: an ADD that finds no netplugd starts one
    store: str = "sqlite:///var/lib/netplug/netplug.db"
    host_name: str
    domain: str = "netplug.internal"
    bridge: str = ""  # "": derived from the network name, see default_bridge()
    log_file: str = "/var/log/netplug/netplug.log"
    run_dir: str = "/run/netplug"
    aliases: tuple[str, ...] = ()
    static_ips: tuple[StaticIP, ...] = ()
    mac: str = ""  # the container end's MAC asked for; "": derived from its address
    valid_attachments: tuple[tuple[str, str], ...] | None = None
    routes: tuple[IpamRoute, ...] = ()  # netplug-ipam's ipam.routes
    prev_result: dict | None = None
    raw: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.bridge:
            object.__setattr__(self, "bridge", default_bridge(self.name))


def default_bridge(name: str) -> str:
    """The bridge name for network `name`: "np-NAME" when that is a usable interface
    name, else "np-" + 12 hex digits of sha1(name) (stable across hosts and restarts)."""
    candidate = "np-" + name
    if is_ifname(candidate):
        return candidate
    import hashlib  # lazily: ~5 ms, and only long network names need it

    return "np-" + hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()[:12]


def is_ifname(name: str) -> bool:
    """True when `name` is a valid interface name (see IFNAME_RULE)."""
    # Go's ValidateInterfaceName (containernetworking/plugins pkg/utils): what the
    # kernel's dev_valid_name() refuses.
    try:
        size = len(name.encode())
    except UnicodeEncodeError:  # a lone surrogate: JSON's "\ud800", or CNI_IFNAME not UTF-8
        return False
    return (
        0 < size <= _IFNAME_MAX
        and name not in (".", "..")
        and not any(c in "/:\0" or c.isspace() for c in name)
    )


def parse_cni_args(s: str) -> dict[str, str]:
    """Parse CNI_ARGS `K=V;K2=V2` leniently: empty parts are skipped, a value may contain
    "=". Raises CNIError(INVALID_ENV) naming a part that is not KEY=VALUE."""
    args = {}
    for part in s.split(";"):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise CNIError(INVALID_ENV, f"CNI_ARGS: expected KEY=VALUE, got {show(part)}")
        args[key] = value
    return args


def config_version(raw: dict) -> str:
    """The config's cniVersion ("0.2.0" when missing, as the spec says).

    Raises CNIError(DECODE_FAILURE) when it is not a string and
    CNIError(INCOMPATIBLE_VERSION) when netplug does not speak it.
    """
    version = json_field(raw, "cniVersion", str, "", _DEFAULT_VERSION, DECODE_FAILURE)
    if version not in SUPPORTED_VERSIONS:
        raise CNIError(
            INCOMPATIBLE_VERSION,
            f"cniVersion {show(version)} is not supported: "
            f"netplug supports {', '.join(SUPPORTED_VERSIONS)}",
        )
    return version


def parse_netconf(raw: dict, env: Mapping[str, str]) -> NetConf:
    """netplug's own config: every field at the top level of `raw` (the parsed stdin).

    `env` supplies CNI_ARGS (container name, IP=) and NETPLUG_HOSTNAME. Raises
    CNIError: UNSUPPORTED_FIELD for an "ipam" section, INVALID_CONFIG for a wrong type
    or value (naming the field), INCOMPATIBLE_VERSION / DECODE_FAILURE for cniVersion.
    """
    if "ipam" in raw:
        raise CNIError(
            UNSUPPORTED_FIELD,
            'netplug allocates addresses itself: remove the "ipam" section '
            f'(got "ipam": {show(raw["ipam"])})',
        )
    return _netconf(raw, raw, "", env, _datapath(raw))


def parse_ipam_conf(raw: dict, env: Mapping[str, str]) -> NetConf:
    """netplug-ipam's config: the delegate gets the whole config (spec), and reads its
    fields from `raw["ipam"]`; name, runtimeConfig, args and prevResult stay at the top.

    Raises CNIError like `parse_netconf`; a missing "ipam" section is INVALID_CONFIG.
    """
    section = required_field(raw, "ipam", dict, "")
    return _netconf(raw, section, "ipam.", env, {"routes": _ipam_routes(section)})


# --- network config --------------------------------------------------------------------


def _netconf(
    raw: dict, section: dict, where: str, env: Mapping[str, str], datapath: dict
) -> NetConf:
    """Build a NetConf from the network fields in `section` (at JSON path `where`) and
    the per-container inputs at the top of `raw`; `datapath` holds the already-parsed
    fields only one plugin reads: netplug's vxlan/mtu/ipMasq/isolate/bridge,
    netplug-ipam's routes (absent: the defaults)."""
    name = required_field(raw, "name", str, "")
    if not is_network_name(name):
        raise invalid("name", name, NETWORK_NAME_RULE)
    cni_args = parse_cni_args(env.get("CNI_ARGS", ""))
    runtime = json_field(raw, "runtimeConfig", dict, "", {})
    subnet = _subnet(section, where, 4)
    subnet6 = _subnet(section, where, 6)
    dns = json_field(section, "dns", dict, where, {})
    return NetConf(
        cni_version=config_version(raw),
        name=name,
        type=json_field(section, "type", str, where, ""),
        subnet=subnet,
        subnet6=subnet6,
        host_block_prefix=_block_prefix(section, where, 4, subnet, NetConf.host_block_prefix),
        host_block_prefix6=_block_prefix(section, where, 6, subnet6, NetConf.host_block_prefix6),
        store=_store(section, where),
        host_name=_host_name(section, where, env),
        domain=_domain(dns, where + "dns."),
        log_file=_abs_path(section, "logFile", where, NetConf.log_file),
        run_dir=_abs_path(section, "runDir", where, NetConf.run_dir),
        aliases=_aliases(runtime, name, cni_args),
        static_ips=_static_ips(raw, runtime, cni_args),
        mac=_mac(runtime, cni_args),
        valid_attachments=_attachments(raw),
        prev_result=json_field(raw, "prevResult", dict, ""),
        raw=raw,
        **datapath,
    )


def _datapath(section: dict) -> dict:
    """The NetConf fields only the netplug plugin itself uses, read from `section`
    (netplug-ipam is a delegate: it never starts the agent)."""
    vxlan = json_field(section, "vxlan", dict, "", {})
    return {
        "vxlan": VxlanConf(
            vni=_int(vxlan, "vni", "vxlan.", VxlanConf.vni, 1, _VNI_MAX),
            port=_int(vxlan, "port", "vxlan.", VxlanConf.port, 1, _PORT_MAX),
            device=_ifname_field(vxlan, "device", "vxlan."),
        ),
        "mtu": _mtu(section),
        "ip_masq": json_field(section, "ipMasq", bool, "", NetConf.ip_masq),
        "isolate": json_field(section, "isolate", bool, "", NetConf.isolate),
        "bridge": _ifname_field(section, "bridge", "") or "",
        "autostart_agent": json_field(
            json_field(section, "agent", dict, "", {}), "autostart", bool, "agent.", True
        ),
    }


def _ipam_routes(section: dict) -> tuple[IpamRoute, ...]:
    """ipam.routes, checked whole here, before ADD allocates anything."""
    routes = []
    for i, item in enumerate(json_field(section, "routes", list, "ipam.", [])):
        where = f"ipam.routes[{i}]"
        item = expect(item, dict, where)
        dst_text = required_field(item, "dst", str, where + ".")
        try:
            dst = ipaddress.ip_network(dst_text)
        except ValueError:
            raise invalid(where + ".dst", dst_text, "a CIDR such as 0.0.0.0/0") from None
        gw_text = json_field(item, "gw", str, where + ".")
        gw = _address_or_none(gw_text) if gw_text else None  # absent or "": the gateway
        if gw_text and (gw is None or gw.version != dst.version):
            raise invalid(where + ".gw", gw_text, f"an IPv{dst.version} address, as dst is")
        routes.append((dst, gw))
    return tuple(routes)


def _address_or_none(text: str) -> IPv4Address | IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _int(
    obj: dict, key: str, where: str, default: int | None, lo: int, hi: int, note: str = ""
) -> int | None:
    value = json_field(obj, key, int, where, default)
    if value is not None and not lo <= value <= hi:
        raise invalid(where + key, value, f"an integer from {lo} to {hi}{note}")
    return value


def _mtu(section: dict) -> int:
    mtu = _int(section, "mtu", "", NetConf.mtu, 0, _MTU_MAX)
    if 0 < mtu < _MTU_MIN:
        raise invalid("mtu", mtu, f"0 (automatic) or an integer from {_MTU_MIN} to {_MTU_MAX}")
    return mtu


def _ifname_field(obj: dict, key: str, where: str) -> str | None:
    name = json_field(obj, key, str, where)
    if name and not is_ifname(name):
        raise invalid(where + key, name, IFNAME_RULE)
    return name or None


def _host_name(section: dict, where: str, env: Mapping[str, str]) -> str:
    """hostName, else NETPLUG_HOSTNAME, else the machine's hostname: a store key
    component whichever gives it, so checked (the message says where it came from)."""
    name = json_field(section, "hostName", str, where)
    source = where + "hostName"
    if not name and env.get("NETPLUG_HOSTNAME"):
        name, source = env["NETPLUG_HOSTNAME"], source + " (from NETPLUG_HOSTNAME)"
    elif not name:
        # os.uname() is what socket.gethostname() returns on Linux, without the
        # cost of importing socket.
        name, source = os.uname().nodename, source + " (this machine's hostname)"
    if not is_host_name(name):
        raise invalid(source, name, HOST_NAME_RULE)
    return name


def _store(section: dict, where: str) -> str:
    """The store URL, checked here so that a bad one is a config error (code 7)."""
    from netplug.ipam.store.url import parse_store_url  # only when a config is parsed

    url = json_field(section, "store", str, where) or NetConf.store
    try:
        parse_store_url(url)
    except ValueError as e:
        raise CNIError(INVALID_CONFIG, f"{where}store: {e}") from e
    return url


def _abs_path(obj: dict, key: str, where: str, default: str) -> str:
    # The runtime execs the plugin in an arbitrary working directory.
    path = json_field(obj, key, str, where) or default
    if not path.startswith("/") or not _is_os_path(path):
        raise invalid(where + key, path, "an absolute path")
    return path


def _is_os_path(text: str) -> bool:
    """Whether the OS takes `text` as a path: JSON strings may hold NUL or a lone
    surrogate, which open(2) would refuse with an exception of its own."""
    try:
        os.fsencode(text)
    except UnicodeEncodeError:
        return False
    return "\0" not in text


def _domain(dns: dict, where: str) -> str:
    """dns.domain without a trailing dot, lower-cased (DNS names are case-insensitive)."""
    domain = json_field(dns, "domain", str, where) or NetConf.domain
    labels = domain.removesuffix(".").split(".")
    if not all(is_dns_label(label) for label in labels):
        raise invalid(where + "domain", domain, "a DNS domain such as netplug.internal")
    return domain.removesuffix(".").lower()


def _subnet(section: dict, where: str, family: int) -> IPv4Network | IPv6Network | None:
    """subnet (family 4, required) or subnet6 (family 6, optional), strictly parsed."""
    key = _SUBNET_KEYS[family]
    text = json_field(section, key, str, where)
    example = _SUBNET_EXAMPLES[family]
    if text is None:
        if family == 6:
            return None
        raise CNIError(INVALID_CONFIG, f"{where}{key} is missing: expected a CIDR like {example}")
    try:
        net = ipaddress.ip_network(text)
    except ValueError:
        raise _bad_subnet(where + key, text, example) from None
    if net.version != family:
        other = _SUBNET_KEYS[net.version]
        raise invalid(where + key, text, f'an IPv{family} CIDR (put this one in "{other}")')
    if net.prefixlen > _MAX_BLOCK_PREFIX[family]:
        raise invalid(where + key, text, f"a prefix of /{_MAX_BLOCK_PREFIX[family]} or shorter")
    return net


def _bad_subnet(where: str, text: str, example: str) -> CNIError:
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return invalid(where, text, f"a CIDR like {example}")
    return CNIError(INVALID_CONFIG, f"{where}: {show(text)} has host bits set: did you mean {net}?")


def _block_prefix(
    section: dict, where: str, family: int, net: IPv4Network | IPv6Network | None, default: int
) -> int:
    """hostBlockPrefix(6): a block lies inside the subnet, so it is no shorter than it."""
    lo = net.prefixlen if net else 0
    note = f" for subnet {net}" if net else ""
    return _int(section, _BLOCK_KEYS[family], where, default, lo, _MAX_BLOCK_PREFIX[family], note)


# --- per-container inputs (top level of the config, and CNI_ARGS) ----------------------


def _aliases(runtime: dict, name: str, cni_args: dict[str, str]) -> tuple[str, ...]:
    """The container's own name first, then runtimeConfig.aliases; de-duplicated
    case-insensitively, order kept. Invalid DNS labels are kept: ADD logs and skips
    them rather than failing (DESIGN)."""
    where = "runtimeConfig.aliases"
    given = runtime.get("aliases")
    if isinstance(given, dict):  # podman/dnsname shape: {network name: [aliases]}
        where += "." + name
        given = given.get(name)
    listed = expect([] if given is None else given, list, where)
    own = cni_args.get("NETPLUG_NAME") or cni_args.get("K8S_POD_NAME")
    names = [own] if own else []
    names += [expect(alias, str, f"{where}[{i}]") for i, alias in enumerate(listed)]
    seen: set[str] = set()
    unique = []
    for alias in names:
        if alias.lower() not in seen:
            seen.add(alias.lower())
            unique.append(alias)
    return tuple(unique)


def _static_ips(raw: dict, runtime: dict, cni_args: dict[str, str]) -> tuple[StaticIP, ...]:
    """Requested static addresses, at most one per family. CONVENTIONS: args.cni.ips
    takes priority over runtimeConfig.ips, which takes priority over CNI_ARGS IP=."""
    args_cni = json_field(json_field(raw, "args", dict, "", {}), "cni", dict, "args.", {})
    sources = (
        ("args.cni.ips", json_field(args_cni, "ips", list, "args.cni.", [])),
        ("runtimeConfig.ips", json_field(runtime, "ips", list, "runtimeConfig.", [])),
        ("CNI_ARGS IP", [ip for ip in cni_args.get("IP", "").split(",") if ip]),
    )
    where, values = next(((w, v) for w, v in sources if v), ("", []))
    parsed = [_static_ip(value, f"{where}[{i}]") for i, value in enumerate(values)]
    # One address listed twice is one request: `podman network reload` lists a
    # container's --ip, then the address it holds (the same one) after it.
    firsts = {getattr(ip, "ip", ip): ip for ip in reversed(parsed)}
    ips = tuple(ip for ip in parsed if firsts[getattr(ip, "ip", ip)] is ip)
    for family in (4, 6):
        same = [str(ip) for ip in ips if ip.version == family]
        if len(same) > 1:
            raise invalid(where, same, f"at most one IPv{family} address")
    return ips


def _static_ip(value: object, where: str) -> StaticIP:
    text = expect(value, str, where)
    try:
        return ipaddress.ip_interface(text) if "/" in text else ipaddress.ip_address(text)
    except ValueError:
        raise invalid(where, text, "an IP address like 10.244.1.5 or 10.244.1.5/24") from None


def _mac(runtime: dict, cni_args: dict[str, str]) -> str:
    """The MAC asked for, as 02:00:00:00:00:42: runtimeConfig.mac (the ``mac``
    capability), else CNI_ARGS MAC= (podman's ``--mac-address``); "" when none is.
    Octets apart by ":" or "-", as Go's net.ParseMAC takes them."""
    where, text = "runtimeConfig.mac", json_field(runtime, "mac", str, "runtimeConfig.", "")
    if not text:
        where, text = "CNI_ARGS MAC", cni_args.get("MAC", "")
    mac = text.replace("-", ":").lower()
    if text and not _is_unicast_mac(mac):
        raise invalid(where, text, "a unicast MAC address such as 02:00:00:00:00:42")
    return mac


def _is_unicast_mac(text: str) -> bool:
    octets = text.split(":")
    if len(octets) != 6 or not all(len(o) == 2 and _is_hex(o) for o in octets):
        return False
    return not int(octets[0], 16) & 1 and text.strip("0:") != ""


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def _attachments(raw: dict) -> tuple[tuple[str, str], ...] | None:
    """GC's list of (containerID, ifname) to keep; None when the config has none. An
    empty list is meaningful: keep nothing."""
    # libcni also writes the legacy key, because of spec bug cni#1101 (cni PR #1103).
    for key in ("cni.dev/valid-attachments", "cni.dev/attachments"):
        entries = json_field(raw, key, list, "")
        if entries is not None:
            return tuple(_attachment(entry, f"{key}[{i}]") for i, entry in enumerate(entries))
    return None


def _attachment(entry: object, where: str) -> tuple[str, str]:
    obj = expect(entry, dict, where)
    where += "."
    return (
        required_field(obj, "containerID", str, where),
        required_field(obj, "ifname", str, where),
    )
