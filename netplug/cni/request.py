"""CNI request parsing: environment + stdin bytes in, a validated `Request` out.

Pure (sans-IO): the caller passes the environment mapping and the stdin bytes, and
gets a `Request` or a `CNIError` -- never any other exception. This module checks the
command, the CNI_* variables, the stdin JSON and the command's cniVersion gate; the
network configuration itself is parsed by a `ConfParser` (`netplug.cni.netconf`).
Every check runs before anything on the host changes (the bridge plugin's
`loadNetConf` rule).

This module sits on the start-up path of a plugin exec'd per container: it imports
only cheap standard-library modules (no `re`, `typing`, `socket` or `hashlib` at
import time).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from netplug.cni import MAX_STDIN
from netplug.cni.errors import (
    DECODE_FAILURE,
    INCOMPATIBLE_VERSION,
    INVALID_ENV,
    CNIError,
    expect,
    invalid,
    json_field,
    show,
)
from netplug.cni.netconf import (
    IFNAME_RULE,
    SUPPORTED_VERSIONS,
    NetConf,
    config_version,
    is_ifname,
    parse_cni_args,
    parse_netconf,
)
from netplug.names import ID_RULE, is_id

COMMANDS = ("ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION")

# Spec "Parameters" table. CNI_NETNS is optional on DEL (the netns may be gone).
# GC needs CNI_PATH per the spec, but only for delegates: libcni always sets it, and
# direct callers (tests, operators) may not, so it is not enforced here.
_REQUIRED_ENV = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
}
# skel's version gates: CHECK came with 0.4.0, GC and STATUS with 1.1.0.
_MIN_VERSION = {"CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}
# skel answers VERSION with 0.1.0 when the query names no cniVersion.
_DEFAULT_VERSION_QUERY = "0.1.0"
# A config nests a few levels (prevResult.ips[0], args.cni.ips). Far below
# Python's recursion limit, so that whatever walks an accepted config later
# (error messages quote values with json.dumps) never meets a RecursionError.
MAX_DEPTH = 64
_INFINITY = float("inf")


@dataclass(frozen=True, kw_only=True)
class Request:
    """One CNI invocation. `conf` is None only for VERSION; container fields may be ""
    where the command does not need them (DEL's netns, GC, STATUS)."""

    command: str
    cni_version: str
    container_id: str
    netns: str
    ifname: str
    cni_args: dict[str, str]
    cni_path: tuple[str, ...]
    conf: NetConf | None
    env: Mapping[str, str]
    # The pid of the process whose view of the file system CNI_NETNS names a
    # path in (the plugin's, when the agent runs the call); 0: this process.
    seen_by: int = 0


ConfParser = Callable[[dict, Mapping[str, str]], NetConf]


def version_reply(cni_version: str) -> dict:
    """The VERSION command's answer: the input version and every version netplug speaks."""
    return {"cniVersion": cni_version, "supportedVersions": list(SUPPORTED_VERSIONS)}


def parse_request(
    env: Mapping[str, str], stdin: bytes, *, conf_parser: ConfParser = parse_netconf
) -> Request:
    """Validate one invocation: `env` is the process environment, `stdin` its input.

    Checks, in skel's order: CNI_COMMAND, the CNI_* variables the command needs
    (INVALID_ENV), stdin JSON (DECODE_FAILURE), cniVersion and the command's version
    gate (INCOMPATIBLE_VERSION), then the config via `conf_parser` (netplug-ipam passes
    `parse_ipam_conf`). Raises CNIError only.
    """
    command = _command(env)
    if command == "VERSION":
        return _version_request(env, stdin)
    _check_env(command, env)
    raw = _decode(stdin, allow_empty=False)
    version = config_version(raw)
    _check_gate(command, version)
    return Request(
        command=command,
        cni_version=version,
        container_id=env.get("CNI_CONTAINERID", ""),
        netns=env.get("CNI_NETNS", ""),
        ifname=env.get("CNI_IFNAME", ""),
        cni_args=parse_cni_args(env.get("CNI_ARGS", "")),
        cni_path=tuple(p for p in env.get("CNI_PATH", "").split(":") if p),
        conf=conf_parser(raw, env),
        env=env,
    )


# --- environment and stdin -------------------------------------------------------------


def _command(env: Mapping[str, str]) -> str:
    command = env.get("CNI_COMMAND", "")
    if command not in COMMANDS:
        what = f"CNI_COMMAND {show(command)} is unknown" if command else "CNI_COMMAND is missing"
        raise CNIError(INVALID_ENV, f"{what}: expected one of {' '.join(COMMANDS)}")
    return command


def _version_request(env: Mapping[str, str], stdin: bytes) -> Request:
    # Spec: VERSION needs only CNI_COMMAND. The query may name a version newer than
    # ours: answer it rather than reject it.
    raw = _decode(stdin, allow_empty=True)
    version = json_field(raw, "cniVersion", str, "", _DEFAULT_VERSION_QUERY, DECODE_FAILURE)
    return Request(
        command="VERSION",
        cni_version=version,
        container_id="",
        netns="",
        ifname="",
        cni_args={},
        cni_path=(),
        conf=None,
        env=env,
    )


def _check_env(command: str, env: Mapping[str, str]) -> None:
    required = _REQUIRED_ENV.get(command, ())
    missing = [var for var in required if not env.get(var)]
    if missing:
        raise CNIError(
            INVALID_ENV,
            f"{command} needs {', '.join(required)}; missing or empty: {', '.join(missing)}",
        )
    container_id = env.get("CNI_CONTAINERID", "")
    if container_id and not is_id(container_id):
        raise invalid("CNI_CONTAINERID", container_id, ID_RULE, INVALID_ENV)
    ifname = env.get("CNI_IFNAME", "")
    if ifname and not is_ifname(ifname):
        raise invalid("CNI_IFNAME", ifname, IFNAME_RULE, INVALID_ENV)


def _decode(stdin: bytes, *, allow_empty: bool) -> dict:
    if len(stdin) > MAX_STDIN:
        raise CNIError(
            DECODE_FAILURE,
            f"stdin holds more than {MAX_STDIN >> 20} MiB: expected a network config",
        )
    if not stdin.strip():
        if allow_empty:
            return {}
        raise CNIError(DECODE_FAILURE, "stdin is empty: expected the network config as JSON")
    try:
        # Go's decoder, which the runtime's own parse of the config used, refuses
        # NaN, Infinity and numbers beyond float64: so does this one.
        raw = json.loads(stdin, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise _too_deep() from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, an int of 4300+ digits
        raise CNIError(DECODE_FAILURE, f"stdin is not valid JSON: {e}") from e
    raw = expect(raw, dict, "stdin", DECODE_FAILURE)
    if not _nested_within(stdin, raw, MAX_DEPTH):
        raise _too_deep()
    return raw


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON value")


def _finite(text: str) -> float:
    number = float(text)
    if abs(number) == _INFINITY:
        raise ValueError(f"number {text[:40]} is out of range")
    return number


def _too_deep() -> CNIError:
    return CNIError(
        DECODE_FAILURE, f"stdin is nested too deeply: expected at most {MAX_DEPTH} levels"
    )


def _nested_within(stdin: bytes, raw: dict, limit: int) -> bool:
    """Whether no list or object in `raw` lies more than `limit` levels deep."""
    if stdin.count(b"[") + stdin.count(b"{") <= limit:  # the usual config: no walk
        return True
    stack: list[tuple[object, int]] = [(raw, 1)]
    while stack:  # a loop, not recursion: the point is to stay off the stack
        value, depth = stack.pop()
        if depth > limit:
            return False
        children = value.values() if isinstance(value, dict) else value
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return True


def _check_gate(command: str, version: str) -> None:
    need = _MIN_VERSION.get(command)
    if need and SUPPORTED_VERSIONS.index(version) < SUPPORTED_VERSIONS.index(need):
        raise CNIError(
            INCOMPATIBLE_VERSION,
            f"{command} needs cniVersion {need} or later; the config has {version}",
        )
