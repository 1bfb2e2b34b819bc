"""The DNS server's Prometheus metrics, in a registry of their own.

Each server owns one ``Metrics`` (and so one ``CollectorRegistry``), so two
servers in one process, or many in one test run, never share counters. Names
are listed in README.md; keep the two in step.

What every query pays for is counted in plain ints, not in prometheus_client
objects (a locked update each, three per query, cost more than the rest of a
cache hit): a ``Tally`` per writer (a UDP listener's thread, or the event
loop) that only that writer changes, so no update is ever lost without a
lock. ``Metrics`` adds the tallies up when ``/metrics`` is scraped: the counts
are exact at that moment. A UDP listener measures latency once per batch of
datagrams and counts it once per reply in the batch (``Latency.observe``'s
weight; see ``udp``). What happens rarely (forwards, malformed packets, TCP
closes) stays in ordinary, thread-safe counters.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from dnslib import QTYPE, RCODE
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

# Label values stay bounded whatever clients send: other types count as "other".
QTYPES = ("A", "AAAA", "PTR", "SRV", "SOA", "NS", "ANY", "TXT", "MX", "CNAME", "HTTPS")
TYPE_LABELS = (*QTYPES, "other", "none")
_TYPE_INDEX = {QTYPE.reverse[name]: i for i, name in enumerate(QTYPES) if name in QTYPE.reverse}
_OTHER, _NONE = len(QTYPES), len(QTYPES) + 1
RCODES = 256  # rcode & 0xFF: a tag is type index * RCODES + rcode
TAGS = len(TYPE_LABELS) * RCODES
LATENCY_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1, 2.5)
_DURATION = "netplug_dns_request_duration_seconds"


def qtype_label(qtype: int | None) -> str:
    return TYPE_LABELS[_type_index(qtype)]


def rcode_label(rcode: int) -> str:
    return "BADVERS" if rcode == 16 else RCODE.forward.get(rcode, str(rcode))


def tag(qtype: int | None, rcode: int) -> int:
    """The index of a query's (type, rcode) in a ``Tally``'s lists."""
    return _type_index(qtype) * RCODES + (rcode & 0xFF)


def _type_index(qtype: int | None) -> int:
    return _NONE if qtype is None else _TYPE_INDEX.get(qtype, _OTHER)


class Latency:
    """A histogram with one writer. A bucket counts queries: an observation of
    ``weight`` n is n queries that took that long (a batch of n replies)."""

    __slots__ = ("buckets", "sum")

    def __init__(self) -> None:
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last: over every bound
        self.sum = 0.0

    def observe(self, seconds: float, weight: int = 1) -> None:
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += weight
        self.sum += seconds * weight

    def add(self, other: Latency) -> None:
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]
        self.sum += other.sum


class Tally:
    """The per-query counts of one writer (a UDP listener's thread, or the loop)."""

    __slots__ = ("answers", "hits", "misses", "tcp", "udp")

    def __init__(self) -> None:
        self.hits = [0] * TAGS  # answered from the cache, by tag
        self.answers = [0] * TAGS  # answered otherwise (resolved, forwarded), by tag
        self.misses = 0  # resolved on the cold path
        self.udp = Latency()
        self.tcp = Latency()

    def add(self, other: Tally) -> None:
        self.hits = [a + b for a, b in zip(self.hits, other.hits, strict=True)]
        self.answers = [a + b for a, b in zip(self.answers, other.answers, strict=True)]
        self.misses += other.misses
        self.udp.add(other.udp)
        self.tcp.add(other.tcp)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry if registry is not None else CollectorRegistry()
        self.loop = Tally()  # the event loop's: TCP, forwarded replies
        self._tallies: list[Tally] = [self.loop]
        self._retired = Tally()  # the counts of listeners that are gone
        r.register(_TallyCollector(self))
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

    def tally(self) -> Tally:
        """A new tally for one writer, counted from now on (call on the loop)."""
        tally = Tally()
        self._tallies = [*self._tallies, tally]
        return tally

    def retire(self, tally: Tally) -> None:
        """Keep the counts of a writer that has stopped writing (call on the loop)."""
        self._tallies = [t for t in self._tallies if t is not tally]
        self._retired.add(tally)

    def total(self) -> Tally:
        """Every tally added up: the counts as of now."""
        total = Tally()
        for tally in (self._retired, *self._tallies):
            total.add(tally)
        return total

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)


class _TallyCollector:
    """The tallied families, read at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterator[Metric]:
        return iter(_families())

    def collect(self) -> Iterator[Metric]:
        total = self.metrics.total()
        queries, hits, misses, duration = _families()
        for i, (hit, other) in enumerate(zip(total.hits, total.answers, strict=True)):
            if hit or other:
                type_index, rcode = divmod(i, RCODES)
                queries.add_metric([TYPE_LABELS[type_index], rcode_label(rcode)], hit + other)
        hits.add_metric([], sum(total.hits))
        misses.add_metric([], total.misses)
        for transport, latency in (("udp", total.udp), ("tcp", total.tcp)):
            cumulative, buckets = 0, []
            for bound, count in zip((*LATENCY_BUCKETS, float("inf")), latency.buckets, strict=True):
                cumulative += count
                buckets.append((floatToGoString(bound), cumulative))
            duration.add_metric([transport], buckets, latency.sum)
        return iter((queries, hits, misses, duration))


def _families() -> tuple[Metric, Metric, Metric, Metric]:
    return (
        CounterMetricFamily(
            "netplug_dns_queries",
            "DNS queries answered, by type and rcode",
            labels=["type", "rcode"],
        ),
        CounterMetricFamily(
            "netplug_dns_cache_hits", "Queries answered from the packed-answer cache"
        ),
        CounterMetricFamily("netplug_dns_cache_misses", "Queries resolved on the cold path"),
        HistogramMetricFamily(
            _DURATION,
            "Time from a query's arrival to its reply, by transport",
            labels=["transport"],
        ),
    )
