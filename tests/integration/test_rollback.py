"""ADD's undo stack: a step failing in the middle of ADD leaves nothing behind.

The real plugin runs in the test's host namespace with a failure injected at a
named point through ``NETPLUG_FAULTS`` (``netplug.faults``: the documented
seam, honoured only when set), as a runtime would run it otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from netplug.ipam.pending import PendingReleases

from netplug_env import NetplugHost, Outcome
from runtimes import run

pytestmark = pytest.mark.netns

ROOT_IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")

# test id -> the points that fail (``STEP`` before the step, ``STEP.after`` once
# it did its work: what it made must go too; ``:bug`` raises an unexpected error)
STEPS = {
    "ensure_bridge": "ensure_bridge",
    "enable_forwarding": "enable_forwarding",
    "drop_early_packets": "drop_early_packets",
    "create_pair": "create_pair",
    "configure_container": "configure_container",
    "learn_container": "learn_container",
    "masq": "masq",
    "ensure_bridge-after": "ensure_bridge.after",
    "enable_forwarding-after": "enable_forwarding.after",
    "configure_container-after": "configure_container.after",
    "learn_container-after": "learn_container.after",
    # an unexpected exception (a bug, not a NetError) unwinds the same way
    "configure_container-bug": "configure_container:bug",
}


def add_failing(host: NetplugHost, ctr: str, conf: dict, faults: str) -> Outcome:
    """ADD of container c1 with the ``faults`` points failing."""
    return host.call("ADD", conf, container_id="c1", netns=ctr, env={"NETPLUG_FAULTS": faults})


def assert_nothing_left(host, ctr: str) -> None:
    assert host.records("/netplug/attachments/") == {}
    assert host.records("/netplug/ips/") == {}
    assert host.veths() == set()
    assert run(["ip", "-n", ctr, "link", "show", "eth0"], check=False).returncode != 0
    assert "netplug-blue" not in host.nft_tables()
    # the bridge's permanent entry for the container's address goes too
    assert run(["ip", "-n", host.netns, "neigh", "show", "nud", "permanent"]).stdout == ""


def assert_error_reply(outcome: Outcome, fragment: str) -> dict:
    assert outcome.status == 1, outcome
    error = json.loads(outcome.stdout)
    assert error["code"] not in (0, None) and fragment in error["msg"], error
    return error


@pytest.fixture(autouse=True)
def _root_ip_forward_untouched():
    """The plugin runs in the test's namespace: prove it wrote only that one's sysctl."""
    before = ROOT_IP_FORWARD.read_text()
    yield
    assert ROOT_IP_FORWARD.read_text() == before


@pytest.mark.parametrize("step", list(STEPS))
def test_failing_step_rolls_back_everything(plain_host, containers, step):
    conf = plain_host.conf(ipMasq=True)
    ctr = containers()

    failed = add_failing(plain_host, ctr, conf, STEPS[step])

    assert_error_reply(failed, f"injected failure in {STEPS[step].split(':')[0]}")
    assert_nothing_left(plain_host, ctr)
    # nothing stands in the way of the next attempt
    plain_host.add(conf, "c1", ctr)
    assert len(plain_host.records("/netplug/attachments/")) == 1


def test_create_pair_failing_after_the_kernel_made_the_pair(plain_host, containers):
    """A failure inside create_pair once the kernel made the pair: the pair goes too."""
    conf = plain_host.conf(ipMasq=True)
    ctr = containers()

    failed = add_failing(plain_host, ctr, conf, "create_pair.linked")

    assert_error_reply(failed, "injected failure in create_pair.linked")
    assert_nothing_left(plain_host, ctr)


def test_failing_undo_step_does_not_replace_the_original_error(plain_host, containers):
    conf = plain_host.conf(ipMasq=True)
    ctr = containers()

    failed = add_failing(plain_host, ctr, conf, "configure_container,undo delete veth")

    error = assert_error_reply(failed, "injected failure in configure_container")
    assert "undo delete veth" not in error["msg"]
    assert "undo step 'delete veth' failed" in failed.stderr  # the undo did raise
    # the undo steps after the failing one still ran: the addresses are released
    assert plain_host.records("/netplug/attachments/") == {}
    assert plain_host.records("/netplug/ips/") == {}


def test_an_undo_that_cannot_reach_the_store_defers_the_release(plain_host, containers):
    """The store goes away between the allocation and the undo: the release is
    kept on the host, as DEL keeps it, and the next ADD settles it first."""
    conf = plain_host.conf()
    ctr = containers()

    failed = add_failing(plain_host, ctr, conf, "configure_container,release")

    assert_error_reply(failed, "injected failure in configure_container")
    assert len(plain_host.records("/netplug/attachments/")) == 1  # the store was "down"
    assert PendingReleases(conf["runDir"], conf["hostName"])
    # the store is back, and the step works
    plain_host.add(conf, "c2", ctr)
    attachments = plain_host.records("/netplug/attachments/")
    assert [key.rsplit("/", 2)[1] for key in attachments] == ["c2"]
    assert not PendingReleases(conf["runDir"], conf["hostName"])


def test_a_malformed_fault_spec_is_a_cni_error_before_anything_changes(plain_host, containers):
    conf = plain_host.conf()
    ctr = containers()
    failed = add_failing(plain_host, ctr, conf, "create_pair*x")
    error = assert_error_reply(failed, "NETPLUG_FAULTS: expected POINT[*COUNT][:bug]")
    assert error["code"] == 4
    assert_nothing_left(plain_host, ctr)


def test_armed_faults_are_logged_in_the_plugin_log_file(plain_host, containers):
    conf = plain_host.conf()
    plain_host.call(
        "ADD", conf, container_id="c1", netns=containers(), env={"NETPLUG_FAULTS": "release*0"}
    )
    log = plain_host.log_file.read_text()
    assert "WARNING fault injection armed: NETPLUG_FAULTS=release*0" in log


def test_netplugd_logs_armed_faults_and_refuses_a_malformed_spec(plain_host, monkeypatch):
    monkeypatch.setenv("NETPLUG_FAULTS", "overlay*0")  # netplugd inherits the environment
    with plain_host.agent():
        assert "WARNING netplugd: fault injection armed: NETPLUG_FAULTS=overlay*0" in (
            plain_host.agent_log()
        )
    monkeypatch.setenv("NETPLUG_FAULTS", "overlay*x")
    refused = pytest.raises(RuntimeError, match=r"exited with 2.*NETPLUG_FAULTS: expected")
    with refused, plain_host.agent():
        pass
