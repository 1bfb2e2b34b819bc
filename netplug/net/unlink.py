"""Deleting a link, and going on once the kernel has unlisted it (DEL's hot path).

An RTM_DELLINK of a veth end is acknowledged only after the kernel has
closed both ends, taken them off their bridge and their addresses, unlisted
them and told RTNLGRP_LINK (about 0.7 ms on the bench machine), and then
waited for RCU a second time (``rcu_barrier``) and for the devices' last
references: 10-30 ms more, most of the agent's DEL. From the notification on
nothing of the pair can carry a packet or be found by name or index, and the
rest runs inside the requesting thread's system call, in uninterruptible
waits that complete even when the process is killed: the pair is gone for
anyone who looks after DEL answered (issue 9). So the request goes out in a
thread of its own, and the caller returns at the first of that thread's
answer and the host end's RTM_DELLINK in the caller's namespace.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pyroute2.netlink.rtnl import RTM_DELLINK

from netplug.net import NetError

log = logging.getLogger(__name__)

RTNLGRP_LINK_MASK = 1  # the bind(2) group bitmask of RTNLGRP_LINK (group 1)
NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence, pid
IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
AF_UNSPEC = 0  # a link's own RTM_DELLINK; AF_BRIDGE ones tell of a bridge port
RCV_BUFFER = 1 << 20  # a burst of container starts sends many link notifications
READ_SIZE = 65536


def unlisted(data: bytes, index: int) -> bool:
    """Whether the netlink messages in ``data`` tell that link ``index`` was deleted."""
    offset = 0
    while offset + NLMSG_HEADER.size <= len(data):
        length, kind, _flags, _seq, _pid = NLMSG_HEADER.unpack_from(data, offset)
        if length < NLMSG_HEADER.size:
            return False  # malformed: nothing after it can be framed
        body = offset + NLMSG_HEADER.size
        whole = length >= NLMSG_HEADER.size + IFINFO.size and body + IFINFO.size <= len(data)
        if kind == RTM_DELLINK and whole:
            family, _type, ifindex, _flags, _change = IFINFO.unpack_from(data, body)
            if family == AF_UNSPEC and ifindex == index:
                return True
        offset += (length + 3) & ~3
    return False


def delete(request: Callable[[], bool], index: int | None, timeout: float) -> bool:
    """Run ``request`` (a deletion; whether there was a link) in a thread, and
    return its answer, or True as soon as link ``index`` of this thread's
    namespace is unlisted. Raises what ``request`` raises when it answers first,
    NetError when neither happens within ``timeout`` seconds. With no ``index``
    (no such link here) it just runs ``request``."""
    if index is None:
        return request()
    with _link_events() as events:
        done_r, done_w = os.pipe2(os.O_CLOEXEC)
        try:
            outcome: dict[str, object] = {}
            threading.Thread(
                target=_run, args=(request, outcome, done_w), name="unlink", daemon=True
            ).start()
            done_w = -1  # the thread's now
            return _first(events, done_r, outcome, index, timeout)
        finally:
            os.close(done_r)
            if done_w >= 0:
                os.close(done_w)


def _run(request: Callable[[], bool], outcome: dict[str, object], done: int) -> None:
    try:
        outcome["value"] = request()
    except Exception as e:
        outcome["error"] = e
    try:
        os.write(done, b".")
    except BrokenPipeError:  # the caller went on at the notification
        if "error" in outcome:
            log.warning("deleting a link failed after it was unlisted: %s", outcome["error"])
    finally:
        os.close(done)


def _first(
    events: socket.socket | None, done: int, outcome: dict[str, object], index: int, timeout: float
) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise NetError(f"deleting link {index} took longer than {timeout:.0f} s")
        watched = [done] if events is None else [done, events]
        ready, _, _ = select.select(watched, [], [], left)
        if done in ready:
            if "error" in outcome:
                raise outcome["error"]  # type: ignore[misc]
            return bool(outcome["value"])
        if events is not None and events in ready:
            try:
                if unlisted(events.recv(READ_SIZE), index):
                    return True
            except OSError as e:  # ENOBUFS: notifications lost; the answer still comes
                log.info("link notifications overflowed (%s): waiting for the deletion", e)
                events = None


@contextmanager
def _link_events() -> Iterator[socket.socket | None]:
    """A NETLINK_ROUTE socket in RTNLGRP_LINK of this thread's namespace (None
    when it cannot be had: the deletion's answer is then waited for)."""
    try:
        sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE
        )
    except OSError as e:
        log.info("no link notifications (%s): waiting for the deletion", e)
        yield None
        return
    with sock:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCV_BUFFER)
            sock.bind((0, RTNLGRP_LINK_MASK))
        except OSError as e:
            log.info("no link notifications (%s): waiting for the deletion", e)
            yield None
            return
        yield sock
