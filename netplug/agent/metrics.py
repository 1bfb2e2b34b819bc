"""netplugd's own Prometheus metrics, beside the DNS server's in one registry."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

CALL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.cni_calls = Counter(
            "netplug_cni_calls",
            "CNI calls the agent served, by command and result (ok, error code, declined)",
            ["command", "result"],
            registry=registry,
        )
        self.cni_duration = Histogram(
            "netplug_cni_call_duration_seconds",
            "Time the agent took for a CNI call, by command",
            ["command"],
            buckets=CALL_BUCKETS,
            registry=registry,
        )
        self.reconciles = Counter(
            "netplug_overlay_reconciles",
            "Times the agent compared the VXLAN peers with the store",
            registry=registry,
        )
        self.bad_records = Counter(
            "netplug_agent_bad_records",
            "Store records an agent part skipped as unreadable, each version once, by part",
            ["part"],
            registry=registry,
        )

    def count_bad_record(self, part: str) -> None:
        self.bad_records.labels(part).inc()

    def follow_loops(self, health: Callable[[], dict[str, dict]]) -> None:
        """Export the supervised loops' ``health()`` (``Supervisor.health``)."""
        self.registry.register(LoopCollector(health))


class LoopCollector:
    """The supervisor's counts, read at each scrape (it keeps them; no copy here)."""

    def __init__(self, health: Callable[[], dict[str, dict]]) -> None:
        self._health = health

    def collect(self) -> Iterator[Metric]:
        restarts = CounterMetricFamily(
            "netplug_agent_loop_restarts",
            "Times an agent loop failed and was started again, by loop",
            labels=["loop"],
        )
        up = GaugeMetricFamily(
            "netplug_agent_loop_up",
            "1 while an agent loop runs without failing, else 0, by loop",
            labels=["loop"],
        )
        for name, report in self._health().items():
            restarts.add_metric([name], report["restarts"])
            up.add_metric([name], 1 if report["state"] == "ok" else 0)
        yield restarts
        yield up
