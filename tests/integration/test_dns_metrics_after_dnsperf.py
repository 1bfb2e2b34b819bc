"""/metrics after real load: dnsperf against the real ``netplug-dns``, counts checked.

The per-query counts live in plain ints that are added up at scrape time
(``netplug.dns.metrics``): this pins that they are exact after thousands of
queries from several clients at once, the latency histogram's included
(measured per batch of datagrams, counted per reply). No namespaces, no root.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dns_process import Server, running_dns

pytestmark = pytest.mark.skipif(
    shutil.which("dnsperf") is None and os.environ.get("CI") != "true",
    reason="needs dnsperf",
)

# (name, type) -> how many times the query file asks it, and the rcode it gets.
MIX = {
    ("web.blue.netplug.internal", "A"): (3000, "NOERROR"),
    ("nope.blue.netplug.internal", "A"): (1000, "NXDOMAIN"),
    ("netplug.internal", "SOA"): (500, "NOERROR"),
    ("web.blue.netplug.internal", "AAAA"): (250, "NOERROR"),  # NODATA
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_dns(tmp_path_factory.mktemp("netplug-dns-metrics")) as running:
        yield running


def scrape(server: Server) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics, by name and sorted labels."""
    status, body = server.http("GET", "/metrics")
    assert status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body["text"])
        for sample in family.samples
    }


def dnsperf(server: Server, queries: Path) -> dict[str, int]:
    """One pass over ``queries`` from 4 clients, at most 20 in flight each."""
    argv = ["dnsperf", "-s", "127.0.0.1", "-p", str(server.dns_port), "-d", str(queries)]
    argv += ["-n", "1", "-c", "4", "-q", "20", "-t", "5"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120).stdout
    return {
        field: int(re.search(rf"Queries {field}:\s+(\d+)", out).group(1))
        for field in ("sent", "completed", "lost")
    }


def delta(after: dict, before: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_counts_are_exact_after_a_dnsperf_run(server: Server, tmp_path: Path) -> None:
    lines = [f"{name} {qtype}" for (name, qtype), (n, _) in MIX.items() for _ in range(n)]
    queries = tmp_path / "queries.txt"
    queries.write_text("\n".join(lines) + "\n")
    total = len(lines)
    before = scrape(server)
    run = dnsperf(server, queries)
    after = scrape(server)
    assert run == {"sent": total, "completed": total, "lost": 0}
    answered: dict[tuple[str, str], int] = {}
    for (_, qtype), (n, rcode) in MIX.items():
        answered[qtype, rcode] = answered.get((qtype, rcode), 0) + n
    for (qtype, rcode), n in answered.items():
        assert delta(after, before, "netplug_dns_queries_total", type=qtype, rcode=rcode) == n
    hits = delta(after, before, "netplug_dns_cache_hits_total")
    misses = delta(after, before, "netplug_dns_cache_misses_total")
    assert hits + misses == total and misses <= len(MIX)  # one miss per distinct question
    count = delta(after, before, "netplug_dns_request_duration_seconds_count", transport="udp")
    inf = delta(
        after, before, "netplug_dns_request_duration_seconds_bucket", transport="udp", le="+Inf"
    )
    assert count == inf == total
    assert delta(after, before, "netplug_dns_request_duration_seconds_sum", transport="udp") > 0
    assert "Traceback" not in server.log.read_text()
