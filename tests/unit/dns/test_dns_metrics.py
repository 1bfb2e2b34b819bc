"""The per-query counts: plain ints per writer, added up when /metrics is scraped."""

from __future__ import annotations

import pytest
from dnslib import QTYPE
from prometheus_client import CollectorRegistry, generate_latest

from netplug.agent.metrics import AgentMetrics
from netplug.dns.metrics import Metrics, qtype_label, tag


def _sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_a_scrape_adds_up_every_tally_and_the_retired() -> None:
    m = Metrics()
    first = m.tally()
    first.hits[tag(QTYPE.A, 0)] += 5
    first.misses += 1
    first.answers[tag(QTYPE.A, 0)] += 1
    first.udp.observe(0.0002, 6)  # a batch of 6 replies
    m.loop.answers[tag(QTYPE.A, 3)] += 2
    m.loop.tcp.observe(0.003)
    m.retire(first)  # its listener is gone: its counts stay
    second = m.tally()
    second.hits[tag(QTYPE.A, 0)] += 1
    assert _sample(m, "netplug_dns_queries_total", type="A", rcode="NOERROR") == 7
    assert _sample(m, "netplug_dns_queries_total", type="A", rcode="NXDOMAIN") == 2
    assert _sample(m, "netplug_dns_cache_hits_total") == 6
    assert _sample(m, "netplug_dns_cache_misses_total") == 1
    udp = {"transport": "udp"}
    assert _sample(m, "netplug_dns_request_duration_seconds_bucket", le="0.0001", **udp) == 0
    assert _sample(m, "netplug_dns_request_duration_seconds_bucket", le="0.00025", **udp) == 6
    assert _sample(m, "netplug_dns_request_duration_seconds_count", **udp) == 6
    assert _sample(m, "netplug_dns_request_duration_seconds_sum", **udp) == pytest.approx(0.0012)
    tcp = {"transport": "tcp"}
    assert _sample(m, "netplug_dns_request_duration_seconds_bucket", le="0.0025", **tcp) == 0
    assert _sample(m, "netplug_dns_request_duration_seconds_bucket", le="+Inf", **tcp) == 1


def test_labels_stay_bounded() -> None:
    m = Metrics()
    m.loop.answers[tag(QTYPE.A, 16)] += 1
    m.loop.answers[tag(None, 1)] += 1
    m.loop.answers[tag(65000, 0)] += 1
    assert _sample(m, "netplug_dns_queries_total", type="A", rcode="BADVERS") == 1
    assert _sample(m, "netplug_dns_queries_total", type="none", rcode="FORMERR") == 1
    assert _sample(m, "netplug_dns_queries_total", type="other", rcode="NOERROR") == 1
    assert qtype_label(QTYPE.HTTPS) == "HTTPS" and qtype_label(QTYPE.NAPTR) == "other"


def test_the_exposition_names_every_family_once() -> None:
    text = Metrics().exposition().decode()
    for family in (
        "netplug_dns_queries_total counter",
        "netplug_dns_cache_hits_total counter",
        "netplug_dns_cache_misses_total counter",
        "netplug_dns_request_duration_seconds histogram",
    ):
        assert text.count(f"# TYPE {family}") == 1


def test_netplugd_shares_one_registry_with_its_own_metrics() -> None:
    """netplugd puts the DNS server's metrics beside the agent's in one registry."""
    registry = CollectorRegistry()
    agent, dns = AgentMetrics(registry), Metrics(registry)
    agent.reconciles.inc()
    dns.tally().hits[tag(QTYPE.AAAA, 0)] += 3
    text = generate_latest(registry).decode()
    assert 'netplug_dns_queries_total{rcode="NOERROR",type="AAAA"} 3.0' in text
    assert "netplug_overlay_reconciles_total 1.0" in text
