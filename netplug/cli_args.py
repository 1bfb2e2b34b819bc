"""Command-line values the programs share: addresses, domains, and the
argparse wrapper that shows a parser's own error message (netplug-dns, netplugd)."""

from __future__ import annotations

import argparse
from ipaddress import ip_address

from netplug.names import is_dns_label


def host_port(text: str, default_port: int | None = None) -> tuple[str, int]:
    """``ADDR:PORT``, ``[V6]:PORT`` (or just the address with ``default_port``)."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r}: write an IPv6 address as [ADDRESS]:PORT")
        port = rest[1:]
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    if not port and default_port is not None:
        port = str(default_port)
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{text!r}: write ADDR:PORT with a port from 0 to 65535")
    return host, int(port)


def upstream(text: str) -> tuple[str, int]:
    """A resolver to forward to: ``ADDR[:PORT]`` (port 53 by default), an IP address
    and a port from 1. A name would be looked up through the system resolver at
    every forwarded query, which may be the very server that forwards."""
    host, port = host_port(text, 53)
    try:
        ip_address(host.split("%")[0])
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError(
            f"{text!r}: expected an IP address with a port from 1 to 65535 "
            "(default 53), e.g. 192.0.2.53 or [2001:db8::53]:53"
        )
    return host, port


def arg_type(parse):  # argparse shows ValueError's message this way
    def wrapped(text: str):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    wrapped.__name__ = parse.__name__
    return wrapped


def domain(text: str) -> str:
    name = text.lower().strip(".")
    if not name or not all(is_dns_label(label) for label in name.split(".")):
        raise ValueError(f"{text!r} is not a domain name: e.g. netplug.internal")
    return name


MAX_TTL = 2**31 - 1  # RFC 2181 8: a TTL is 31 bits; dnslib refuses what does not fit 32


def dns_ttl(text: str) -> int:
    """Seconds for a DNS TTL: a whole number from 0 to ``MAX_TTL``."""
    value = text.strip()
    if not (value.isascii() and value.isdigit()) or int(value) > MAX_TTL:
        raise ValueError(f"{text!r}: expected whole seconds from 0 to {MAX_TTL}")
    return int(value)


def positive_seconds(text: str) -> float:
    """Seconds greater than 0 (a time budget: 0 would fail everything at once)."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):  # also NaN
        raise ValueError(f"{text!r}: expected seconds, more than 0")
    return seconds
