"""The DNS server's Prometheus metrics, in a registry of their own.

Each server owns one ``Metrics`` (and so one ``CollectorRegistry``), so two
servers in one process, or many in one test run, never share counters. Names
are listed in README.md; keep the two in step.
"""

from __future__ import annotations

from dnslib import QTYPE, RCODE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Label values stay bounded whatever clients send: other types count as "other".
QTYPES = frozenset(("A", "AAAA", "PTR", "SRV", "SOA", "NS", "ANY", "TXT", "MX", "CNAME", "HTTPS"))
_KNOWN = frozenset(QTYPE.reverse[name] for name in QTYPES if name in QTYPE.reverse)
LATENCY_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1, 2.5)


def qtype_label(qtype: int | None) -> str:
    if qtype is None:
        return "none"
    if qtype == -1:
        return "other"
    name = QTYPE.forward.get(qtype, "other")
    return name if name in QTYPES else "other"


def rcode_label(rcode: int) -> str:
    return "BADVERS" if rcode == 16 else RCODE.forward.get(rcode, str(rcode))


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry if registry is not None else CollectorRegistry()
        self.queries = Counter(
            "netplug_dns_queries",
            "DNS queries answered, by type and rcode",
            ["type", "rcode"],
            registry=r,
        )
        self.duration = Histogram(
            "netplug_dns_request_duration_seconds",
            "Time from a query's arrival to its reply, by transport",
            ["transport"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.cache_hits = Counter(
            "netplug_dns_cache_hits", "Queries answered from the packed-answer cache", registry=r
        )
        self.cache_misses = Counter(
            "netplug_dns_cache_misses", "Queries resolved on the cold path", registry=r
        )
        self.cache_entries = Gauge(
            "netplug_dns_cache_entries", "Answers in the packed-answer cache", registry=r
        )
        self.forwards = Counter(
            "netplug_dns_forward_requests",
            "Queries forwarded upstream, by outcome (ok, truncated_tcp, failed)",
            ["outcome"],
            registry=r,
        )
        self.malformed = Counter(
            "netplug_dns_malformed_requests", "Packets dropped or answered FORMERR", registry=r
        )
        self.registry_names = Gauge(
            "netplug_dns_registry_names", "Names with addresses in the registry", registry=r
        )
        self.registry_revision = Gauge(
            "netplug_dns_registry_revision", "Store revision of the registry snapshot", registry=r
        )
        self.store_up = Gauge(
            "netplug_dns_store_up", "1 while the store answers the registry's watch", registry=r
        )
        self.tcp_connections = Gauge(
            "netplug_dns_tcp_connections", "TCP connections open, all listeners", registry=r
        )
        self.tcp_closed = Counter(
            "netplug_dns_tcp_closed",
            "TCP connections the server closed or refused, by reason "
            "(timeout, client_limit, server_full)",
            ["reason"],
            registry=r,
        )
        self.udp = self.duration.labels("udp")
        self.tcp = self.duration.labels("tcp")
        self._children: dict[tuple[int | None, int], Counter] = {}

    def query(self, qtype: int | None, rcode: int) -> Counter:
        """The (cached) counter child for one type and rcode."""
        key = (qtype if qtype in _KNOWN or qtype is None else -1, rcode & 0xFF)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.queries.labels(
                qtype_label(qtype), rcode_label(rcode)
            )
        return child

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)
