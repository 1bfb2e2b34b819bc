"""One CNI call in, one reply out: the boundary every netplug plugin shares.

``handle`` parses the call, runs the command, and converts every error into
the spec's error JSON at this single place (h11's rule: foreign errors are
translated once, where their meaning is known). Whoever runs it - the agent
in a worker thread, or a plugin process itself - only moves bytes.
Standard library only: netplug-ipam runs it on its start-up path.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from netplug.cni import errors
from netplug.cni.errors import CNIError
from netplug.cni.netconf import NetConf, parse_netconf
from netplug.cni.request import ConfParser, Request, parse_request, version_reply
from netplug.cni.result import Result, to_json
from netplug.host import Host
from netplug.ipam import identity
from netplug.ipam.allocations import IPAMError
from netplug.ipam.store.base import StoreCorrupt, StoreReset, StoreUnavailable
from netplug.locks import LockTimeout

log = logging.getLogger(__name__)

HostFor = Callable[[NetConf], Host | None]
Command = Callable[[Request, Host], Result | None]


@dataclass(frozen=True, slots=True)
class Reply:
    stdout: bytes
    exit_code: int
    summary: str = ""  # the call's one log line
    log_file: str = ""
    declined: str = ""  # set when ``host_for`` refused: the caller runs it elsewhere


@dataclass(frozen=True, slots=True)
class Plugin:
    """A plugin's commands, its config parser, the errors it expects to
    report without a traceback (anything else is logged as a bug), and the
    commands that run instead of refusing on a store that was reset or
    replaced (a DEL must still free the host: the runtime retries it forever)."""

    commands: Mapping[str, Command]
    conf_parser: ConfParser = parse_netconf
    expected: tuple[type[Exception], ...] = ()
    on_reset_store: Mapping[str, Command] = dataclasses.field(default_factory=dict)


def handle(
    plugin: Plugin, env: Mapping[str, str], stdin: bytes, host_for: HostFor, seen_by: int = 0
) -> Reply:
    """Run the call described by ``env`` and ``stdin`` on the host ``host_for``
    picks; ``seen_by`` is the pid of the process that named the call's paths
    (``Request.seen_by``; 0: this one)."""
    started = time.monotonic()
    req: Request | None = None
    try:
        req = parse_request(env, stdin, conf_parser=plugin.conf_parser)
        if seen_by:
            req = dataclasses.replace(req, seen_by=seen_by)
        if req.command == "VERSION":
            return Reply(_dump(version_reply(req.cni_version)), 0)
        host = _translated(plugin, req, host_for, req.conf)
        if host is None:
            return Reply(b"", 0, declined="the call names another store or host")
        memory = host.store_memory(req.conf.run_dir)
        command = plugin.commands[req.command]
        try:
            unknown = _check_store(plugin, req, host, memory)
        except CNIError as refusal:
            command, unknown = _despite_refusal(plugin, req, refusal), False
        result = _translated(plugin, req, command, req, host)
        if unknown:
            _adopt_store(host, memory)
        output = b"" if result is None else _dump(to_json(result, req.cni_version))
        return _done(req, started, output, 0, "ok")
    except Exception as e:
        error = e if isinstance(e, CNIError) else _bug(e, env)
        version = req.cni_version if req is not None else "1.1.0"
        return _done(
            req, started, _dump(error.to_json(version)), 1, f"error {error.code}: {error.msg}"
        )


def _bug(e: Exception, env: Mapping[str, str]) -> CNIError:
    """An error outside the commands (which ``_translated`` covers): parsing raises
    CNIError only, so this is a bug; the runtime still gets one error object."""
    log.error("%s call failed", env.get("CNI_COMMAND", "?"), exc_info=e)
    return CNIError(errors.INTERNAL, f"internal error: {e!r}")


def _check_store(plugin: Plugin, req: Request, host: Host, memory: identity.HostMemory) -> bool:
    """Refuse a store that was reset or replaced before the command changes
    anything (STATUS reports it as the spec's "cannot serve ADD", 50); whether
    the host has yet to adopt the store's identity."""
    try:
        return _translated(plugin, req, identity.check, host.store, memory)
    except CNIError as e:
        if req.command == "STATUS":
            raise CNIError(errors.NOT_AVAILABLE, e.msg) from e
        raise


def _despite_refusal(plugin: Plugin, req: Request, refusal: CNIError) -> Command:
    """The command that runs on a store refused as reset (the store is not
    adopted); re-raises ``refusal`` for the others."""
    command = plugin.on_reset_store.get(req.command)
    if command is None or refusal.code != errors.STORE_RESET:
        raise refusal
    log.warning(
        "%s of %s/%s on a store that was reset: the host is freed, the store left alone: %s",
        req.command,
        req.container_id,
        req.ifname,
        refusal.msg,
    )
    return command


def _adopt_store(host: Host, memory: identity.HostMemory) -> None:
    """After a call that succeeded: a failure here is the next call's to meet."""
    try:
        identity.adopt(host.store, memory)
    except (StoreUnavailable, OSError) as e:
        log.warning("could not remember store %s for host %s: %s", host.store.url, host.name, e)


def _translated(plugin: Plugin, req: Request, func, *args):
    """``func(*args)`` with every foreign error turned into a CNIError."""
    try:
        return func(*args)
    except CNIError:
        raise
    except StoreReset as e:
        raise CNIError(errors.STORE_RESET, str(e)) from e
    except StoreCorrupt as e:
        raise CNIError(errors.STORE_CORRUPT, f"store is corrupt: {e}") from e
    except (StoreUnavailable, LockTimeout) as e:
        raise CNIError(errors.TRY_AGAIN_LATER, f"try again later: {e}") from e
    except IPAMError as e:
        raise CNIError(e.code, str(e)) from e
    except (*plugin.expected, OSError) as e:
        raise CNIError(errors.INTERNAL, f"{req.command} failed: {e}") from e
    except Exception as e:
        log.exception("%s of %s/%s failed", req.command, req.container_id, req.ifname)
        raise CNIError(errors.INTERNAL, f"{req.command} failed: {e!r}") from e


def _done(req: Request | None, started: float, stdout: bytes, code: int, outcome: str) -> Reply:
    elapsed = (time.monotonic() - started) * 1000
    if req is None or req.conf is None:
        return Reply(stdout, code, f"invalid call: {outcome} ({elapsed:.1f} ms)")
    summary = (
        f"{req.command} container={req.container_id or '-'} ifname={req.ifname or '-'} "
        f"network={req.conf.name} {outcome} ({elapsed:.1f} ms)"
    )
    (log.info if code == 0 else log.warning)("%s", summary)
    return Reply(stdout, code, summary, req.conf.log_file)


def _dump(document: dict) -> bytes:
    return json.dumps(document).encode()


def handle_in_process(plugin: Plugin, env: Mapping[str, str], stdin: bytes) -> Reply:
    """Run the call here, opening the store for this call only."""
    opened: list[Host] = []

    def host_for(conf: NetConf) -> Host:
        opened.append(Host.open(conf.host_name, conf.store))
        return opened[-1]

    try:
        return handle(plugin, env, stdin, host_for)
    finally:
        for host in opened:
            host.close()
