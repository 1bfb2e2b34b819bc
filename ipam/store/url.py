"""Store URLs, and the one function that picks a backend for one.

    sqlite:///ABSOLUTE/PATH
    etcd://HOST[:PORT][,HOST[:PORT]...]
    etcds://HOST[:PORT][,...][?cacert=PATH&cert=PATH&key=PATH]

IPv6 hosts go in brackets (``[::1]:2379``); the port defaults to 2379. The
host list is parsed here rather than by ``urllib``, which takes only one host
per URL and would make this start-up path pay for its import.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import Store

DEFAULT_STORE_URL = "sqlite:///var/lib/netplug/netplug.db"
ETCD_PORT = 2379

_FORMS = "use sqlite:///ABSOLUTE/PATH or etcd://HOST:PORT[,HOST:PORT]"
_TLS_PARAMS = ("cacert", "cert", "key")


@dataclass(frozen=True, slots=True)
class StoreURL:
    """A parsed store URL: ``path`` for sqlite, ``endpoints`` (and TLS files for
    etcds) for etcd."""

    scheme: str
    path: str = ""
    endpoints: tuple[tuple[str, int], ...] = ()
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None


def parse_store_url(url: str) -> StoreURL:
    """Parse a store URL; raises ValueError naming what is wrong and how to fix it."""
    if not url.isprintable():  # NUL, a newline, a lone surrogate: no file or host has one
        raise ValueError(f"store URL {url!r} holds a control or invalid character: {_FORMS}")
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"store URL {url!r} has no scheme: {_FORMS}")
    if scheme == "sqlite":
        return _parse_sqlite(url, rest)
    if scheme in ("etcd", "etcds"):
        return _parse_etcd(url, scheme, rest)
    raise ValueError(f"store URL {url!r} has unknown scheme {scheme!r}: {_FORMS}")


def open_store(url: str) -> Store:
    """A connected store for ``url``; a new one per call (nothing is cached).

    Raises ValueError for a malformed URL and StoreUnavailable for a backend
    that this build lacks or that cannot be opened.
    """
    parsed = parse_store_url(url)
    if parsed.scheme == "sqlite":
        from .sqlite import SQLiteStore  # etcd users need not import sqlite3

        return SQLiteStore(parsed.path)
    from .etcd import EtcdStore  # sqlite users need not import the etcd client

    return EtcdStore(
        parsed.endpoints,
        url=url,
        cacert=parsed.cacert,
        cert=parsed.cert,
        key=parsed.key,
        tls=parsed.scheme == "etcds",
    )


def _parse_sqlite(url: str, path: str) -> StoreURL:
    if not path.startswith("/"):
        raise ValueError(
            f"store URL {url!r} needs an absolute path, with three slashes: sqlite:///ABSOLUTE/PATH"
        )
    if path.endswith("/"):
        raise ValueError(
            f"store URL {url!r} names a directory: add a file name, "
            "e.g. sqlite:///var/lib/netplug/netplug.db"
        )
    return StoreURL("sqlite", path=path)


def _parse_etcd(url: str, scheme: str, rest: str) -> StoreURL:
    hosts, _, query = rest.partition("?")
    hosts = hosts.removesuffix("/")
    if query and scheme == "etcd":
        raise ValueError(
            f"store URL {url!r} has TLS options on plain etcd://: "
            "use etcds://HOST:PORT?cacert=PATH&cert=PATH&key=PATH"
        )
    if not hosts:
        raise ValueError(f"store URL {url!r} lists no hosts: use {scheme}://HOST:PORT[,HOST:PORT]")
    if "/" in hosts:
        raise ValueError(
            f"store URL {url!r} has a path: etcd URLs take none, "
            f"use {scheme}://HOST:PORT[,HOST:PORT]"
        )
    endpoints = tuple(_parse_endpoint(url, item) for item in hosts.split(","))
    return StoreURL(scheme, endpoints=endpoints, **_parse_tls(url, query))


def _parse_endpoint(url: str, item: str) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT``, ``[V6]`` or ``[V6]:PORT``."""
    if item.startswith("["):
        host, bracket, port = item[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            raise ValueError(f"store URL {url!r}: bad IPv6 endpoint {item!r}: write [ADDRESS]:PORT")
        port = port[1:]
    elif item.count(":") > 1:
        raise ValueError(
            f"store URL {url!r}: IPv6 address {item!r} needs brackets: [{item}] or [ADDRESS]:PORT"
        )
    else:
        host, _, port = item.partition(":")
    if not host:
        raise ValueError(
            f"store URL {url!r}: bad endpoint {item!r}: write HOST:PORT, comma-separated"
        )
    return host, _parse_port(url, item, port)


def _parse_port(url: str, item: str, port: str) -> int:
    if not port:
        return ETCD_PORT
    if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ValueError(
            f"store URL {url!r}: endpoint {item!r} has bad port {port!r}: "
            "use a number from 1 to 65535 (default 2379)"
        )
    return int(port)


def _parse_tls(url: str, query: str) -> dict[str, str]:
    """``cacert=PATH&cert=PATH&key=PATH``, each optional, cert and key together."""
    tls: dict[str, str] = {}
    for item in filter(None, query.split("&")):
        name, _, value = item.partition("=")
        if name not in _TLS_PARAMS or name in tls or not value:
            raise ValueError(
                f"store URL {url!r}: bad option {item!r}: use each of "
                "cacert=PATH, cert=PATH and key=PATH at most once"
            )
        tls[name] = value
    if ("cert" in tls) != ("key" in tls):
        raise ValueError(
            f"store URL {url!r}: a client certificate needs both cert=PATH and key=PATH"
        )
    return tls
