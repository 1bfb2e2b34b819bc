"""netplugd's own Prometheus metrics, beside the DNS server's in one registry."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from netplug.agent.enforcement import Enforcement
from netplug.policy.report import HostCounters

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

        self.enforce_last = Gauge(
            "netplug_policy_enforce_last_seconds",
            "Seconds the last policy change took from reaching the agent to nft applying it",
            registry=registry,
        )
        self.enforce = Histogram(
            "netplug_policy_enforce_seconds",
            "Seconds each policy change took from reaching the agent to nft applying it",
            buckets=CALL_BUCKETS,
            registry=registry,
        )
        self.enforce_failures = Counter(
            "netplug_policy_enforce_failures",
            "Times nft refused to make netplug's table match the store",
            registry=registry,
        )

    def enforcement(self, state: Enforcement, took: float | None) -> None:
        """The enforcer's report (``Enforcer.on_report``)."""
        if took is not None:
            self.enforce_last.set(took)
            self.enforce.observe(took)
        if state.failing:  # reported once per refused attempt
            self.enforce_failures.inc()

    def follow_policies(
        self, counters: Callable[[], HostCounters], state: Callable[[], Enforcement]
    ) -> None:
        """Export the table's counters (``PolicyReport.counters``) and the enforcer's state."""
        self.registry.register(PolicyCollector(counters, state))

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


class PolicyCollector:
    """The counters as last read (every few seconds, not at each scrape: no nft
    exec on the event loop) and the enforcer's state."""

    def __init__(
        self, counters: Callable[[], HostCounters], state: Callable[[], Enforcement]
    ) -> None:
        self._counters, self._state = counters, state

    def collect(self) -> Iterator[Metric]:
        counters, state = self._counters(), self._state()
        packets = CounterMetricFamily(
            "netplug_policy_packets",
            "Packets this host's table let through (allowed) or dropped, by policy",
            labels=["policy", "verdict"],
        )
        for name, counts in counters.policies.items():
            packets.add_metric([name, "allowed"], counts.allowed)
            packets.add_metric([name, "dropped"], counts.dropped)
        yield packets
        yield CounterMetricFamily(
            "netplug_isolation_dropped_packets",
            "Packets this host's table dropped between isolated networks",
            value=counters.isolation_dropped,
        )
        yield GaugeMetricFamily(
            "netplug_policy_enforced",
            "1 while the table matches the store, 0 while nft refuses it",
            value=0 if state.failing else 1,
        )
        if state.revision is not None:
            yield GaugeMetricFamily(
                "netplug_policy_revision",
                "The store's policy revision in force on this host",
                value=state.revision,
            )
