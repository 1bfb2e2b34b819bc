"""The etcd store: the ``Store`` interface over etcd's v3 API (its JSON gateway).

Keys and values travel base64-encoded; every request has a deadline, and an
etcd that cannot be reached gives ``StoreUnavailable`` (see ``etcd_gateway``).

Where etcd and ``base.Store`` differ, this backend bridges them:

- etcd has no empty key: the whole key space (prefix ``""``) is the range
  ``"\\0"`` .. ``"\\0"``, as etcdctl's ``--from-key``;
- etcd's value compare never holds for a missing key, while ``base`` compares
  a missing key's value as ``b""``: a value compare that ``b""`` satisfies
  becomes a nested transaction (key absent -> drop the compare, else keep it);
- lease TTLs are whole seconds (rounded up, and at least etcd's minimum TTL);
- ``Compacted.compact_revision`` is the newest revision gone, so a watch
  resumes at ``compact_revision + 1`` on either backend.

What etcd refuses and SQLite allows: writing a key twice (put and put, or
delete and put) in one branch of a transaction (``ValueError``).
"""

from __future__ import annotations

import base64
import contextlib
import math
import operator
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from . import etcd_watch as watching
from .base import (
    Compacted,
    Compare,
    Delete,
    Event,
    Get,
    KeyValue,
    LeaseNotFound,
    Op,
    Put,
    RangeResult,
    StoreUnavailable,
    TxnResult,
)
from .etcd_gateway import EtcdError, Gateway, WatchStream, error_of, tls_context

_TARGETS = {"create": "CREATE", "mod": "MOD", "version": "VERSION", "value": "VALUE"}
_FIELDS = {"create": "create_revision", "mod": "mod_revision", "version": "version"}
_RESULTS = {"=": "EQUAL", "!=": "NOT_EQUAL", "<": "LESS", ">": "GREATER"}
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}
_NOT_FOUND, _INVALID, _OUT_OF_RANGE = 5, 3, 11  # gRPC status codes


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def _range(key: str, prefix: bool) -> dict[str, str]:
    """The ``key`` / ``range_end`` fields selecting one key or a whole prefix."""
    raw = key.encode()
    if not prefix:
        return {"key": _b64(raw)}
    if not raw:
        return {"key": _b64(b"\0"), "range_end": _b64(b"\0")}
    end = raw.rstrip(b"\xff")
    if not end:  # every byte 0xff: everything from the key on
        return {"key": _b64(raw), "range_end": _b64(b"\0")}
    return {"key": _b64(raw), "range_end": _b64(end[:-1] + bytes([end[-1] + 1]))}


def _kv(raw: dict[str, Any]) -> KeyValue:
    return KeyValue(
        _unb64(raw.get("key")).decode(),
        _unb64(raw.get("value")),
        int(raw.get("create_revision", 0)),
        int(raw.get("mod_revision", 0)),
        int(raw.get("version", 0)),
        int(raw.get("lease", 0)),
    )


def _event(raw: dict[str, Any]) -> Event:
    prev = raw.get("prev_kv")
    prev_value = _unb64(prev.get("value")) if prev else None
    kv = raw.get("kv", {})
    if raw.get("type") == "DELETE":
        key = _unb64(kv.get("key")).decode()
        return Event("delete", KeyValue(key, b"", 0, int(kv.get("mod_revision", 0)), 0), prev_value)
    return Event("put", _kv(kv), prev_value)


def _check(compare: Compare) -> None:
    if compare.target not in _TARGETS or compare.op not in _RESULTS:
        raise ValueError(
            f"bad compare {compare!r}: target must be one of "
            f"{sorted(_TARGETS)} and op one of {sorted(_OPS)}"
        )


def _compare(compare: Compare) -> dict[str, Any]:
    body: dict[str, Any] = {
        "key": _b64(compare.key.encode()),
        "target": _TARGETS[compare.target],
        "result": _RESULTS[compare.op],
    }
    if compare.target == "value":
        if not isinstance(compare.value, bytes):
            raise ValueError(f"bad compare {compare!r}: a value compare takes bytes")
        body["value"] = _b64(compare.value)
    else:
        if not isinstance(compare.value, int):
            raise ValueError(f"bad compare {compare!r}: {compare.target} takes an int")
        body[_FIELDS[compare.target]] = str(compare.value)
    return body


def _lenient(compare: Compare) -> bool:
    """A value compare that ``base`` says holds for a missing key (etcd: never)."""
    return compare.target == "value" and _OPS[compare.op](b"", compare.value)


def _request_op(op: Op) -> dict[str, Any]:
    match op:
        case Put():
            put: dict[str, Any] = {"key": _b64(op.key.encode()), "value": _b64(op.value)}
            if op.lease:
                put["lease"] = str(op.lease)
            return {"request_put": put}
        case Delete():
            return {"request_delete_range": _range(op.key, op.prefix)}
        case Get():
            return {"request_range": _range(op.key, op.prefix)}
    raise TypeError(f"not a store op: {op!r}")


def _txn_request(
    compares: Sequence[Compare],
    success: list[dict[str, Any]],
    failure: list[dict[str, Any]],
    strict: tuple[Compare, ...] = (),
) -> dict[str, Any]:
    """etcd's TxnRequest; one nesting level per lenient compare (see the module doc)."""
    for i, compare in enumerate(compares):
        if _lenient(compare):
            rest = [*compares[:i], *compares[i + 1 :]]
            absent = _txn_request(rest, success, failure, strict)
            present = _txn_request(rest, success, failure, (*strict, compare))
            return {
                "compare": [_compare(Compare.absent(compare.key))],
                "success": [{"request_txn": absent}],
                "failure": [{"request_txn": present}],
            }
    return {
        "compare": [_compare(c) for c in (*strict, *compares)],
        "success": success,
        "failure": failure,
    }


def _response(raw: dict[str, Any]) -> object:
    if "response_range" in raw:
        return [_kv(kv) for kv in raw["response_range"].get("kvs", [])]
    if "response_delete_range" in raw:
        return int(raw["response_delete_range"].get("deleted", 0))
    return None  # response_put


def _revision(reply: dict[str, Any]) -> int:
    return int(reply.get("header", {}).get("revision", 0))


class EtcdStore:
    """A ``Store`` on the etcd cluster at ``endpoints`` (``[(host, port), ...]``).

    Safe to share between threads: each thread keeps its own keep-alive
    connection. Nothing is connected until the first call.
    """

    def __init__(
        self,
        endpoints: Sequence[tuple[str, int]],
        *,
        url: str | None = None,
        cacert: str | None = None,
        cert: str | None = None,
        key: str | None = None,
        tls: bool = False,
    ) -> None:
        if not endpoints:
            raise ValueError("an etcd store needs at least one endpoint")
        use_tls = tls or bool(cacert or cert)
        context = tls_context(cacert, cert, key) if use_tls else None
        self._http = Gateway(endpoints, context)
        hosts = self._http.names.replace("https://", "").replace("http://", "")
        self.url = url or f"{'etcds' if use_tls else 'etcd'}://{hosts}"

    # -- reads ---------------------------------------------------------------

    def get(self, key: str) -> KeyValue | None:
        """The key's current value, or None."""
        kvs = self.range(key).kvs
        return kvs[0] if kvs else None

    def range(self, key: str, prefix: bool = False, limit: int = 0) -> RangeResult:
        """One key, or every key under a prefix, in key order, at one revision."""
        body: dict[str, Any] = _range(key, prefix)
        if limit:
            body["limit"] = str(limit)
        reply = self._call("kv/range", body, idempotent=True)
        return RangeResult([_kv(kv) for kv in reply.get("kvs", [])], _revision(reply))

    def status(self) -> int:
        """The current revision, by a linearizable read (so it needs a quorum)."""
        return _revision(self._call("kv/range", {"key": _b64(b"\0")}, idempotent=True))

    # -- writes --------------------------------------------------------------

    def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        """Atomically: if every compare holds run ``success`` else ``failure``.
        Raises LeaseNotFound (and changes nothing) for a Put with a dead lease."""
        for compare in compares:
            _check(compare)
        then, otherwise = [_request_op(op) for op in success], [_request_op(op) for op in failure]
        writes = any(not isinstance(op, Get) for op in (*success, *failure))
        reply = self._call("kv/txn", _txn_request(compares, then, otherwise), idempotent=not writes)
        revision, inner = _revision(reply), reply
        for _ in range(sum(map(_lenient, compares))):
            inner = inner["responses"][0]["response_txn"]
        responses = [_response(r) for r in inner.get("responses", [])]
        return TxnResult(bool(inner.get("succeeded", False)), revision, responses)

    def put(self, key: str, value: bytes, lease: int = 0) -> int:
        """Write one key; returns the new revision."""
        body = _request_op(Put(key, value, lease))["request_put"]
        return _revision(self._call("kv/put", body, idempotent=False))

    def delete(self, key: str, prefix: bool = False) -> int:
        """Delete a key or a prefix; returns how many keys went."""
        reply = self._call("kv/deleterange", _range(key, prefix), idempotent=False)
        return int(reply.get("deleted", 0))

    # -- leases --------------------------------------------------------------

    def grant(self, ttl: float) -> int:
        """A new lease that expires ``ttl`` seconds (rounded up to whole seconds, at
        least etcd's minimum TTL) from now unless kept alive."""
        if ttl <= 0:
            raise ValueError(f"lease TTL must be positive, got {ttl}")
        # Repeating a grant is harmless: a lease nobody uses expires by itself.
        reply = self._call("lease/grant", {"TTL": str(math.ceil(ttl))}, idempotent=True)
        return int(reply["ID"])

    def keepalive(self, lease: int) -> float:
        """Renew a lease to its full TTL; returns the TTL. Raises LeaseNotFound."""
        reply = self._call("lease/keepalive", {"ID": str(lease)}, idempotent=True)
        ttl = int(reply.get("result", {}).get("TTL", 0))
        if ttl <= 0:
            raise LeaseNotFound(f"lease {lease} expired or was revoked: grant a new one")
        return float(ttl)

    def revoke(self, lease: int) -> None:
        """End a lease now, deleting its keys. A missing lease is not an error."""
        with contextlib.suppress(LeaseNotFound):
            self._call("lease/revoke", {"ID": str(lease)}, idempotent=True)

    # -- watch ---------------------------------------------------------------

    def watch(self, prefix: str, start_revision: int, timeout: float) -> Iterator[list[Event]]:
        """Batches of events under ``prefix`` from ``start_revision`` on (0: from now).

        etcd never splits a revision between two answers. When the stream
        breaks, or its member stops answering or loses its leader (checked after
        PROBE_AFTER without a message), the watch reconnects to another member
        and resumes at the last seen revision + 1, so nothing is missed; it
        raises StoreUnavailable once etcd stays unreachable for the store's
        total timeout, Compacted when the history it needs is gone. Yields
        ``[]`` every ``timeout`` seconds without events (later by up to a
        connection attempt, 2 s, while it reconnects). Like etcd, it may take
        0.1 s to replay past revisions.
        """
        request = _range(prefix, True)
        # "From now" is pinned to a revision at once, so that a reconnect misses nothing.
        following = start_revision if start_revision > 0 else self.status() + 1
        stream: WatchStream | None = None
        avoid: int | None = None  # the member whose stream failed last: tried last
        down_since: float | None = None
        heard = time.monotonic()  # when the stream last said anything
        deadline = time.monotonic() + timeout
        try:
            while True:
                if time.monotonic() >= deadline:
                    yield []
                    deadline = time.monotonic() + timeout
                if stream is None:
                    body = {**request, "prev_kv": True, "start_revision": str(following)}
                    try:
                        stream = self._http.open_watch({"create_request": body}, avoid)
                        heard = time.monotonic()
                    except StoreUnavailable:
                        now = time.monotonic()
                        down_since = down_since or now
                        if now - down_since > self._http.total_timeout:
                            raise
                        time.sleep(min(0.1, max(0.0, deadline - now)))
                        continue
                try:
                    message = stream.next_message(min(deadline, heard + watching.PROBE_AFTER))
                except (OSError, ValueError):
                    message = watching.DROPPED
                action = watching.step(message, time.monotonic() - heard)
                if action == watching.PROBE:
                    if self._http.probe(stream.conn.endpoint, watching.PROBE_TIMEOUT):
                        heard = time.monotonic()
                        continue
                    action = watching.RECONNECT
                if action == watching.RECONNECT:
                    # Resume at ``following`` on another member; no busy loop against
                    # one that hangs up at once.
                    avoid = stream.conn.endpoint
                    stream.close()
                    stream = None
                    time.sleep(0.01)
                    continue
                if message is None:
                    continue  # timed out: the next round yields []
                down_since, heard = None, time.monotonic()
                result = self._watch_result(message)
                events = [_event(e) for e in result.get("events", [])]
                if events:
                    following = watching.resume_at(following, [e.kv.mod_revision for e in events])
                    yield events
                    deadline = time.monotonic() + timeout
        finally:
            if stream is not None:
                stream.close()

    def _watch_result(self, message: dict[str, Any]) -> dict[str, Any]:
        error = error_of(message)
        if error:
            raise self._translate(error)
        result: dict[str, Any] = message.get("result", {})
        if result.get("canceled"):
            compacted = int(result.get("compact_revision", 0))
            if compacted:
                # etcd's compact revision is the oldest one kept; base's the newest gone.
                raise Compacted(compacted - 1)
            reason = result.get("cancel_reason") or "no reason given"
            raise StoreUnavailable(f"etcd at {self._http.names} cancelled a watch: {reason}")
        return result

    # -- plumbing ------------------------------------------------------------

    def close(self) -> None:
        """Close this store's connections; the store reconnects on next use."""
        self._http.close()

    def _call(self, path: str, body: dict[str, Any], idempotent: bool) -> dict[str, Any]:
        try:
            reply = self._http.call(path, body, idempotent)
        except EtcdError as e:
            raise self._translate(e) from e
        return reply

    def _translate(self, error: EtcdError) -> Exception:
        text = str(error)
        if error.code == _NOT_FOUND and "lease" in text:
            return LeaseNotFound(f"{text}: grant a new lease")
        if error.code == _OUT_OF_RANGE and "compacted" in text:
            return Compacted(0)
        if error.code == _INVALID:
            return ValueError(f"etcd at {self._http.names} refused the request: {text}")
        return StoreUnavailable(f"etcd at {self._http.names} failed: {text} (code {error.code})")
