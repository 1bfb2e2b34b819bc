"""The agent's loop supervisor: its pure bookkeeping by table, then real threads
whose loops fail on purpose (the seam: the target handed to ``start``), seen
through /metrics' collector and the agent's health query on a real socket."""

from __future__ import annotations

import itertools
import threading
import time
import uuid

import pytest
from prometheus_client import CollectorRegistry

from netplug.agent.metrics import AgentMetrics
from netplug.agent.plugin_server import PluginServer
from netplug.agent.supervisor import FAILING, OK, STOPPED, Backoff, LoopHealth, Supervisor, overall
from netplug.ctl.main import agent_status, failing_loops

from waiting import wait_for

QUICK = Backoff(initial=0.05, maximum=0.2, stable_after=1.0)


@pytest.mark.parametrize(
    ("previous", "ran_for", "expected"),
    [
        (None, 0.0, 0.05),  # first failure
        (0.05, 0.0, 0.1),  # doubles
        (0.1, 0.1, 0.2),
        (0.2, 0.0, 0.2),  # bounded
        (0.2, 1.0, 0.05),  # a stable run starts over
    ],
)
def test_backoff(previous, ran_for, expected):
    assert QUICK.next_delay(previous, ran_for) == expected


def health_after(*steps: tuple[str, float]) -> LoopHealth:
    health = LoopHealth("overlay")
    for step, now in steps:
        health = health.started(now) if step == "start" else health.failed(now, "E: boom")
    return health


@pytest.mark.parametrize(
    ("steps", "now", "state", "restarts"),
    [
        pytest.param((), 0, STOPPED, 0, id="never-started"),
        pytest.param((("start", 0),), 100, OK, 0, id="running"),
        pytest.param((("start", 0), ("fail", 1)), 1.2, FAILING, 0, id="waiting-to-restart"),
        pytest.param(
            (("start", 0), ("fail", 1), ("start", 1.5)), 1.7, FAILING, 1, id="restarted-not-stable"
        ),
        pytest.param(
            (("start", 0), ("fail", 1), ("start", 1.5)), 2.5, OK, 1, id="restarted-and-stable"
        ),
        pytest.param(
            (("start", 0), ("fail", 1), ("start", 1.5), ("fail", 2.5), ("start", 2.6)),
            2.8,
            FAILING,
            2,
            id="failing-again",
        ),
    ],
)
def test_loop_health(steps, now, state, restarts):
    health = health_after(*steps)
    report = health.report(now, QUICK.stable_after)
    assert (report["state"], report["restarts"]) == (state, restarts)
    assert ("lastError" in report) == any(step == "fail" for step, _ in steps)


def test_overall_is_degraded_while_any_loop_fails():
    assert overall({}) == "ok"
    assert overall({"a": {"state": OK}, "b": {"state": STOPPED}}) == "ok"
    assert overall({"a": {"state": OK}, "b": {"state": FAILING}}) == "degraded"
    assert overall({"a": {"state": OK}}, store_refused=True) == "degraded"
    assert overall({"a": {"state": OK}}, enforcement_failing=True) == "degraded"


class Flaky:
    """A loop that raises on its first ``failures`` runs, then runs until stopped."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.runs = 0
        self.healthy_run = threading.Event()

    def __call__(self, stop: threading.Event) -> None:
        self.runs += 1
        if self.runs <= self.failures:
            raise RuntimeError(f"injected failure {self.runs}")
        self.healthy_run.set()
        stop.wait()


@pytest.fixture
def supervisor():
    supervisor = Supervisor(QUICK)
    try:
        yield supervisor
    finally:
        supervisor.stop(5)


def metric(registry: CollectorRegistry, name: str, loop: str) -> float | None:
    return registry.get_sample_value(name, {"loop": loop})


def test_a_failing_loop_is_restarted_counted_and_reported_then_healthy(supervisor, caplog):
    registry = CollectorRegistry()
    AgentMetrics(registry).follow_loops(supervisor.health)
    flaky = Flaky(failures=3)
    supervisor.start("overlay", flaky)
    supervisor.start("steady", lambda stop: stop.wait())

    assert wait_for(flaky.healthy_run.is_set)
    assert flaky.runs == 4
    report = supervisor.health()["overlay"]
    assert report["state"] == FAILING  # restarted, not yet stable
    assert report["restarts"] == 3
    assert report["lastError"] == "RuntimeError: injected failure 3"
    assert overall(supervisor.health()) == "degraded"
    assert metric(registry, "netplug_agent_loop_restarts_total", "overlay") == 3
    assert metric(registry, "netplug_agent_loop_up", "overlay") == 0
    assert metric(registry, "netplug_agent_loop_up", "steady") == 1
    assert "loop overlay failed; restarting" in caplog.text
    assert "RuntimeError: injected failure 1" in caplog.text  # with its traceback
    assert "Traceback" in caplog.text

    assert wait_for(lambda: supervisor.health()["overlay"]["state"] == OK)
    assert overall(supervisor.health()) == "ok"
    assert metric(registry, "netplug_agent_loop_up", "overlay") == 1
    assert metric(registry, "netplug_agent_loop_restarts_total", "overlay") == 3


def test_a_loop_that_returns_early_is_restarted(supervisor):
    runs = []
    supervisor.start("quits", lambda stop: runs.append(1) if len(runs) < 2 else stop.wait())
    assert wait_for(lambda: len(runs) == 2 and supervisor.health()["quits"]["restarts"] == 2)
    assert "LoopExited" in supervisor.health()["quits"]["lastError"]


class Timed(Flaky):
    """A Flaky that notes when each run starts (monotonic seconds)."""

    def __init__(self, failures: int) -> None:
        super().__init__(failures)
        self.starts: list[float] = []

    def __call__(self, stop: threading.Event) -> None:
        self.starts.append(time.monotonic())
        super().__call__(stop)


def test_a_loop_failing_every_run_is_retried_at_the_bounded_pace(supervisor):
    """Never a busy loop: each restart waits at least the backoff's delay (a
    loaded machine only makes the waits longer, so lower bounds hold)."""
    timed = Timed(failures=10**6)
    supervisor.start("broken", timed)
    assert wait_for(lambda: len(timed.starts) >= 5)
    starts = timed.starts[:5]
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    delays, previous = [], None
    for _ in gaps:  # the runs fail at once: ran_for is about 0
        previous = QUICK.next_delay(previous, 0.0)
        delays.append(previous)
    assert delays == [0.05, 0.1, 0.2, 0.2]  # doubling, then bounded
    assert all(gap >= delay for gap, delay in zip(gaps, delays, strict=True))
    assert supervisor.health()["broken"]["state"] == FAILING


def test_stop_ends_every_loop_and_reports_them_stopped():
    supervisor = Supervisor(QUICK)
    supervisor.start("a", lambda stop: stop.wait())
    supervisor.start("b", Flaky(failures=10**6))
    started = time.monotonic()
    supervisor.stop(5)
    assert time.monotonic() - started < 2
    assert {r["state"] for r in supervisor.health().values()} <= {STOPPED, FAILING}
    assert not [t for t in threading.enumerate() if t.name in ("a", "b")]


def test_a_name_runs_once(supervisor):
    supervisor.start("a", lambda stop: stop.wait())
    with pytest.raises(ValueError, match="runs already"):
        supervisor.start("a", lambda stop: stop.wait())


def test_netplugctl_status_hears_degraded_over_the_agent_socket(supervisor):
    """The health query over a real abstract socket, as ``netplugctl status`` asks
    it (no HTTP API): degraded naming the loop and its error, then running."""
    name = f"\0netplugd-test-{uuid.uuid4().hex}"
    server = PluginServer(
        None,
        AgentMetrics(CollectorRegistry()),
        socket_name=name,
        health=lambda: {"status": overall(supervisor.health()), "loops": supervisor.health()},
    )
    server.start()
    try:
        flaky = Flaky(failures=2)
        supervisor.start("overlay", flaky)
        assert wait_for(flaky.healthy_run.is_set)
        agent, health = agent_status(name)
        assert agent == "degraded"
        (line,) = failing_loops(health)
        assert line.startswith("loop overlay failing for ")
        assert line.endswith("(2 restarts): RuntimeError: injected failure 2")
        assert wait_for(lambda: agent_status(name)[0] == "running")
    finally:
        server.close()
