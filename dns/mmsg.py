"""Batches of datagrams for a UDP listener: Linux's recvmmsg and sendmmsg.

The standard library reads and sends one datagram per system call, and turns
the client's address into a string and a tuple on the way in and back on the
way out (inet_ntop's sprintf, then inet_pton): in a profile of a cache hit
those conversions, the argument parsing around them and the two system calls
were over a third of the instructions. A ``Batch`` reads up to ``size``
datagrams with one ``recvmmsg``; the kernel writes each client's raw sockaddr
into a slot of its own, and the reply to a datagram goes back to those very
bytes with one ``sendmmsg`` for the batch, never converted.

Each datagram has a slot of ``slot`` bytes: the query lands there, and its
reply is written over it (the ID, the slot's first two bytes, stays). The
layouts are the kernel's (``struct mmsghdr``), built with ctypes; the hot
loop reads and writes them through memoryviews (``view``, ``received``,
``lengths``).
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import sys

MSG_WAITFORONE = 0x10000  # linux/socket.h: block for the first datagram only
MSG_TRUNC = 0x20  # in a message's flags: the datagram was longer than its slot
NAME = 28  # sizeof(struct sockaddr_in6), room for either family
_UINT = ctypes.sizeof(ctypes.c_uint)


class _IOVec(ctypes.Structure):
    _fields_ = (("base", ctypes.c_void_p), ("len", ctypes.c_size_t))


class _MsgHdr(ctypes.Structure):
    _fields_ = (
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.c_void_p),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    )


class _MMsgHdr(ctypes.Structure):
    _fields_ = (("hdr", _MsgHdr), ("len", ctypes.c_uint))


# No argtypes: converting each argument through them cost more than the call
# (about 6k instructions a call). Pointers are passed as ready c_void_p objects,
# the rest are small ints, which ctypes passes as C ints.
_libc = ctypes.CDLL(None, use_errno=True)
_recvmmsg, _sendmmsg = _libc.recvmmsg, _libc.sendmmsg

# Indexes into the views, in units of the view's item.
STRIDE = ctypes.sizeof(_MMsgHdr) // _UINT  # one mmsghdr, in unsigned ints
LEN = _MMsgHdr.len.offset // _UINT  # the bytes the kernel read
NAMELEN = _MsgHdr.namelen.offset // _UINT  # the address's length (0: the socket was shut down)
FLAGS = _MsgHdr.flags.offset // _UINT


class Batch:
    def __init__(self, family: int, size: int = 64, slot: int = 4096) -> None:
        self.family, self.size, self.slot = family, size, slot
        self._data = ctypes.create_string_buffer(size * slot)
        self._names = ctypes.create_string_buffer(size * NAME)
        self._iov_in = (_IOVec * size)()
        self._iov_out = (_IOVec * size)()
        self._in = (_MMsgHdr * size)()
        self._out = (_MMsgHdr * size)()
        data, names = ctypes.addressof(self._data), ctypes.addressof(self._names)
        namelen = NAME if family == socket.AF_INET6 else 16  # sizeof(struct sockaddr_in)
        for i in range(size):
            self._iov_in[i].base = self._iov_out[i].base = data + i * slot
            self._iov_in[i].len = slot
            for msg, iov, length in (
                (self._in[i], self._iov_in, NAME),
                (self._out[i], self._iov_out, namelen),
            ):
                msg.hdr.name = names + i * NAME
                msg.hdr.namelen = length
                msg.hdr.iov = ctypes.addressof(iov) + i * ctypes.sizeof(_IOVec)
                msg.hdr.iovlen = 1
        self._in_at = ctypes.c_void_p(ctypes.addressof(self._in))
        # sendmmsg from message i on: a pointer to each, made once
        self._out_at = [
            ctypes.c_void_p(ctypes.addressof(self._out) + i * ctypes.sizeof(_MMsgHdr))
            for i in range(size)
        ]
        self.view = memoryview(self._data).cast("B")  # the slots
        self.received = memoryview(self._in).cast("B").cast("I")  # [i * STRIDE + LEN]
        self.lengths = memoryview(self._iov_out).cast("B").cast("Q")  # reply i: [2 * i + 1]
        self._name_view = memoryview(self._names).cast("B")

    def receive(self, fd: int) -> int:
        """Read a batch: wait for one datagram, take what else is there (up to
        ``size``); how many. 0 when interrupted by a signal."""
        n = _recvmmsg(fd, self._in_at, self.size, MSG_WAITFORONE, None)
        if n >= 0:
            return n
        err = ctypes.get_errno()
        if err == errno.EINTR:
            return 0
        raise OSError(err, os.strerror(err))

    def send(self, fd: int, start: int, stop: int) -> None:
        """Send the replies in slots ``start`` to ``stop`` (``lengths`` set), each
        to the address its query came from. A reply the kernel refuses is
        dropped, as the network may drop any."""
        while start < stop:
            sent = _sendmmsg(fd, self._out_at[start], stop - start, 0)
            if sent >= 0:
                start += sent
                continue
            err = ctypes.get_errno()
            if err in (errno.EBADF, errno.ENOTSOCK):
                raise OSError(err, os.strerror(err))
            if err != errno.EINTR:
                start += 1  # that reply is dropped

    def cut_short(self, i: int) -> bool:
        """Whether datagram ``i`` was longer than its slot (the rest is lost)."""
        return bool(self.received[i * STRIDE + FLAGS] & MSG_TRUNC)

    def address(self, i: int) -> tuple | None:
        """Datagram ``i``'s sender as the socket module writes it; None when the
        socket was shut down (no sender)."""
        length = self.received[i * STRIDE + NAMELEN]
        if not length:
            return None
        raw = bytes(self._name_view[i * NAME : i * NAME + length])
        port = int.from_bytes(raw[2:4], "big")
        if self.family == socket.AF_INET:
            return socket.inet_ntop(socket.AF_INET, raw[4:8]), port
        flow, scope = int.from_bytes(raw[4:8], "big"), int.from_bytes(raw[24:28], sys.byteorder)
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port, flow, scope
