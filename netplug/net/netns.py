"""Netlink handles inside other network namespaces, scoped by ``with``.

setns(2) with CLONE_NEWNET changes only the calling thread, and a socket stays
in the namespace it was created in. So a handle for a container's namespace is
a netlink socket made while this thread is briefly inside it; the thread is
back in its own namespace before any other work runs. That is both cheaper
than pyroute2's fork-per-socket ``netns=`` and safe in the agent's thread pool.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol, TypeVar

from pyroute2 import IPRoute

from netplug.net import links
from netplug.net.rtnl import Rtnl

CLONE_NEWNET = 0x40000000
NS_GET_NSTYPE = 0xB703  # ioctl _IO(0xb7, 0x3), Linux 4.11: the CLONE_NEW* type of an nsfs fd
EXPECTED = "a network namespace such as /run/netns/NAME or /proc/PID/ns/net"
_libc = ctypes.CDLL(None, use_errno=True)
_thread = threading.local()  # per thread: its own-namespace sockets, and how deep in entered()


class _Closable(Protocol):
    def close(self) -> None: ...


S = TypeVar("S", bound=_Closable)


class NetnsNotFound(Exception):
    """No network namespace at the path (the container is gone)."""


class NotANetns(NetnsNotFound):
    """The path holds something else: a file or a directory (a regular file is
    what an unmounted /run/netns/NAME leaves behind), or another kind of
    namespace. ``str()`` names the path and what it is."""


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


def resolved(path: str, seen_by: int = 0) -> str:
    """``path`` as process ``seen_by`` sees it (0: as this process does).

    A runtime may run in its own mount namespace (podman does) and bind-mount
    the container's namespace only there: the agent then reaches the path the
    plugin was given through the plugin process's root, /proc/PID/root.
    """
    return f"/proc/{seen_by}/root{path}" if seen_by and path.startswith("/") else path


def open_netns(path: str, seen_by: int = 0) -> int:
    """An fd of the network namespace at ``path`` (as process ``seen_by`` sees it,
    see ``resolved``); raises NetnsNotFound when nothing is there, NotANetns
    when something else is. Errors name ``path`` as given."""
    real = resolved(path, seen_by)
    try:
        # Looked at before it is opened: opening a FIFO would block, a device act.
        mode = os.stat(real).st_mode
    except (FileNotFoundError, NotADirectoryError) as e:
        raise NetnsNotFound(f"network namespace {path} does not exist") from e
    except OSError as e:  # ENAMETOOLONG, ELOOP, EACCES
        raise NotANetns(f"{path} cannot be looked at ({e.strerror})") from e
    if not stat.S_ISREG(mode):  # an nsfs file stats as a regular file
        what = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise NotANetns(f"{path} is {what}")
    fd = os.open(real, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError:  # ENOTTY: not a namespace at all
        kind = 0
    if kind != CLONE_NEWNET:
        os.close(fd)
        raise NotANetns(f"{path} is {'another kind of namespace' if kind else 'a regular file'}")
    return fd


@contextmanager
def opened(path: str, seen_by: int = 0) -> Iterator[int]:
    """An fd of the namespace at ``path`` (as process ``seen_by`` sees it) for
    the body (NetnsNotFound when it is gone): one open for the several steps
    of a call that work inside it."""
    fd = open_netns(path, seen_by)
    try:
        yield fd
    finally:
        os.close(fd)


@contextmanager
def entered(where: str | int) -> Iterator[None]:
    """Run the body with this thread inside the namespace at path ``where`` (or
    open as file descriptor ``where``, which stays open)."""
    target = where if isinstance(where, int) else open_netns(where)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target)
        _thread.away = getattr(_thread, "away", 0) + 1
        try:
            yield
        finally:
            # A thread left in a container's namespace would configure the wrong
            # host on its next call: failing to return is fatal, not an error.
            try:
                _setns(own)
            except OSError:
                os.abort()
            _thread.away -= 1
    finally:
        os.close(own)
        if not isinstance(where, int):
            os.close(target)


def handle(path: str | int | None = None) -> AbstractContextManager[IPRoute]:
    """pyroute2's IPRoute bound to the namespace at ``path`` (or open as fd
    ``path``; None: this thread's own): for dumps and the shared devices, off
    the per-container hot path."""
    return _bound(path, IPRoute, "own_iproute")


def channel(path: str | int | None = None) -> AbstractContextManager[Rtnl]:
    """A lean rtnetlink channel (``rtnl.Rtnl``) in the namespace at ``path`` (or
    open as fd ``path``; None: this thread's own): the ADD and DEL hot path."""
    return _bound(path, Rtnl, "own_rtnl")


@contextmanager
def _bound(path: str | int | None, factory: Callable[[], S], cached_as: str) -> Iterator[S]:
    """A socket made by ``factory`` inside the namespace at ``path``, closed after
    the body. The one for a thread's own namespace is kept for the thread's
    life: opening one costs as much as a request, and the agent's worker
    threads make several per call.
    """
    if path is None and not getattr(_thread, "away", 0):
        sock = getattr(_thread, cached_as, None)
        if sock is None:
            sock = factory()
            setattr(_thread, cached_as, sock)
        yield sock
        return
    if path is None:
        sock = factory()
    else:
        with entered(path):
            sock = factory()
    try:
        yield sock
    finally:
        sock.close()


def link_index(path: str | int, name: str) -> int | None:
    """The index of link ``name`` inside the namespace at ``path`` (or open as fd
    ``path``), or None (cheap)."""
    with entered(path):
        return links.index(name)


def is_current(path: str, seen_by: int = 0) -> bool:
    """True when ``path`` (as process ``seen_by`` sees it) is the namespace this
    thread is in (CNI code 8 guard)."""
    try:
        there = os.stat(resolved(path, seen_by))
    except OSError:  # opening it says what is wrong with it
        return False
    here = os.stat("/proc/thread-self/ns/net")
    return (there.st_dev, there.st_ino) == (here.st_dev, here.st_ino)
