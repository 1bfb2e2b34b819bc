"""The paths a call names on the host, checked before a command changes anything:
the container's namespace (``CNI_NETNS``) and the state directory (``runDir``).

The parser cannot check them (it is pure); the commands meet them first thing,
so a path that cannot serve is reported with the spec's code and the path,
rather than as whatever errno the first step that uses it happens to hit.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import TypeVar

from netplug.cni import errors
from netplug.cni.errors import CNIError
from netplug.cni.netconf import NetConf
from netplug.cni.request import Request
from netplug.host import Host
from netplug.net import netns

T = TypeVar("T")


def container_netns(command: Callable[[Request, Host], T]) -> Callable[[Request, Host], T]:
    """Report a CNI_NETNS that is missing, or that holds no network namespace (a
    file, a directory), as a bad CNI_NETNS (code 4), and the plugin's own
    namespace as code 8, as skel does. For ADD and CHECK: DEL takes a namespace
    that is not there as one already gone."""

    @functools.wraps(command)
    def checked(req: Request, host: Host) -> T:
        if netns.is_current(req.netns, req.seen_by):
            raise CNIError(
                errors.INVALID_NETNS,
                f"CNI_NETNS {req.netns} is the plugin's own network namespace: "
                "pass the container's namespace",
            )
        try:
            return command(req, host)
        except netns.NotANetns as e:
            raise CNIError(errors.INVALID_ENV, f"CNI_NETNS: {e}: expected {netns.EXPECTED}") from e
        except netns.NetnsNotFound as e:
            raise CNIError(errors.INVALID_ENV, f"CNI_NETNS={req.netns} does not exist") from e

    return checked


def require_run_dir(conf: NetConf, host: Host) -> str:
    """This host's directory under runDir (locks, deferred releases), made when
    missing; CNIError(INVALID_CONFIG) naming runDir when it cannot be, before
    anything changes (a later step would fail halfway, or DEL lose a release)."""
    directory = os.path.join(conf.run_dir, host.name)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise CNIError(
            errors.INVALID_CONFIG,
            f"runDir: {conf.run_dir} cannot hold netplug's state ({e.strerror}): "
            "expected a directory, such as /run/netplug",
        ) from e
    return directory


def require_writable_run_dir(conf: NetConf, host: Host) -> None:
    """``require_run_dir``, and one that can be written: ADD and GC write there
    (locks, each attachment's record). A read-only one (a remounted /run, a unit's
    ProtectSystem) fails them halfway otherwise; DEL does not ask, as it frees the
    interfaces and addresses whatever runDir says. One access(2): root passes the
    permission bits, so what it catches is a read-only file system."""
    if not os.access(require_run_dir(conf, host), os.W_OK):
        raise CNIError(
            errors.INVALID_CONFIG,
            f"runDir: {conf.run_dir} is not writable (a read-only file system?): netplug "
            "keeps its locks and each attachment's record there; make it writable or set "
            "runDir to a writable directory such as /run/netplug",
        )
