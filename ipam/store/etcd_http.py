"""One HTTP/1.1 client connection to etcd's JSON gateway: h11 for the HTTP, a socket here.

h11 writes the requests and reads the answers (head, Content-Length or chunked
body with trailers, keep-alive); this module only moves bytes between it and
the socket, each read bounded by a deadline. A deadline that passes leaves
h11 where it was, so a stream read again later goes on from the same place.
(``http.client`` would cost 20-40 ms to import and loses its place in a chunk
when a read times out.)
"""

from __future__ import annotations

import functools
import os
import socket
import time

import h11

_CUT = "closed by the server in the middle of an answer"


class ProtocolError(ConnectionError):
    """The server's answer is not HTTP/1.1 as h11 reads it."""


class StaleConnection(ConnectionError):
    """The server closed a kept-alive connection before answering on it."""


class Connection:
    """One HTTP/1.1 connection to one endpoint: requests, and answers read with deadlines."""

    def __init__(self, sock: socket.socket, endpoint: int, host: str) -> None:
        self.sock, self.endpoint, self.host = sock, endpoint, host
        self.pid = os.getpid()
        self.used = False  # an answer was read: the server may have closed it since
        self.reusable = True  # False once the server said it closes after its answer
        self._http = h11.Connection(h11.CLIENT)
        self._answering = False  # a byte of the current answer arrived
        self._eof = False  # the server closed its side

    def send(self, path: str, payload: bytes) -> None:
        """Send ``POST /v3/<path>`` with the JSON ``payload``."""
        http = self._http
        head = _request(self.host, path, len(payload))
        data = http.send(head) + http.send(h11.Data(data=payload)) + http.send(h11.EndOfMessage())
        self._answering = False
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError) as e:
            if self.used:
                raise StaleConnection("closed by the server") from e
            raise

    def head(self, deadline: float) -> tuple[int, dict[bytes, bytes]]:
        """The status and headers (lower-case names, as h11 gives them) of the next answer."""
        while True:
            event = self._next(deadline)
            if event is None:
                raise TimeoutError("timed out")
            if isinstance(event, h11.Response):
                return event.status_code, dict(event.headers)
            if not isinstance(event, h11.InformationalResponse):
                raise ProtocolError(f"unexpected {type(event).__name__} before the answer")

    def body(self, deadline: float) -> bytes:
        """The rest of the body of the answer whose head was just read."""
        parts = []
        while (piece := self.read(deadline)) is not None:
            if not piece:
                raise TimeoutError("timed out")
            parts.append(piece)
        return b"".join(parts)

    def read(self, deadline: float) -> bytes | None:
        """The next piece of the answer's body: b"" when ``deadline`` passes first,
        None at its end (then, if ``reusable``, the connection takes another request)."""
        event = self._next(deadline)
        if event is None:
            return b""
        if isinstance(event, h11.Data):
            return event.data
        if isinstance(event, h11.EndOfMessage):
            self.used = True
            if self._http.our_state is h11.DONE and self._http.their_state is h11.DONE:
                self._http.start_next_cycle()
            else:
                self.reusable = False
            return None
        raise ProtocolError(f"unexpected {type(event).__name__} in an answer's body")

    def close(self) -> None:
        self.sock.close()

    def _next(self, deadline: float) -> h11.Event | None:
        """The next event of the answer, receiving as needed; None when ``deadline`` passes."""
        while True:
            if self._answering:  # before its first byte, h11 could only say NEED_DATA
                try:
                    event = self._http.next_event()
                except h11.RemoteProtocolError as e:
                    if self._eof:
                        raise ConnectionError(_CUT) from e
                    raise ProtocolError(str(e)) from e
                if event is not h11.NEED_DATA:
                    return event  # type: ignore[return-value]
                if self._eof:
                    raise ConnectionError(_CUT)
            if not self._receive(deadline):
                return None

    def _receive(self, deadline: float) -> bool:
        """Feed h11 what arrives before ``deadline``; False if nothing did."""
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        except ConnectionResetError as e:
            if self.used and not self._answering:
                raise StaleConnection("reset by the server") from e
            raise
        if not data:
            if not self._answering:
                if self.used:
                    raise StaleConnection("closed by the server")
                raise ConnectionError("closed by the server")
            self._eof = True
        self._answering = True
        self._http.receive_data(data)
        return True


@functools.lru_cache(maxsize=256)
def _request(host: str, path: str, length: int) -> h11.Request:
    """The head of a request: h11 checks each new one, and the same few recur."""
    headers = [
        ("Host", host),
        ("Content-Type", "application/json"),
        ("Content-Length", str(length)),
        # gRPC metadata through the gateway: refuse at once, without a leader (see etcd_gateway).
        ("Grpc-Metadata-Hasleader", "true"),
    ]
    return h11.Request(method="POST", target="/v3/" + path, headers=headers)
