"""netplugd's own Prometheus metrics, beside the DNS server's in one registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

CALL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
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
