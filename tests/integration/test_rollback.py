"""ADD's undo stack: a step failing in the middle of ADD leaves nothing behind.

The executable cannot be monkeypatched, so the real handler runs in this process,
with the test thread inside the test's host namespace (``netns.entered``): the same
code path as the plugin's in-process fallback, one step made to fail.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from netplug.cni import commands, handler
from netplug.ipam.allocations import IPAM
from netplug.ipam.pending import PendingReleases
from netplug.ipam.store.base import StoreUnavailable
from netplug.net import NetError, bridge, links, masq, netns, sysctl, veth

from runtimes import NETNS_DIR, run

pytestmark = pytest.mark.netns

ROOT_IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def add_in_process(host_netns: str, ctr: str, conf: dict[str, Any], container_id: str = "c1"):
    """ADD through ``handle_in_process`` with this thread in ``host_netns``."""
    env = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": str(NETNS_DIR / ctr),
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/usr/lib/cni",
    }
    with netns.entered(str(NETNS_DIR / host_netns)):
        return handler.handle_in_process(env, json.dumps(conf).encode())


def fail_before(what: str, exc: type[Exception] = NetError) -> Callable[[Any], Callable]:
    """A replacement that raises instead of doing the step."""

    def make(_original: Callable) -> Callable:
        def step(*args, **kwargs):
            raise exc(f"injected failure in {what}")

        return step

    return make


def fail_after(what: str) -> Callable[[Any], Callable]:
    """A replacement that does the step, then raises (the step's work is done)."""

    def make(original: Callable) -> Callable:
        def step(*args, **kwargs):
            original(*args, **kwargs)
            raise NetError(f"injected failure in {what}")

        return step

    return make


# (where the step lives, its name, how it fails)
STEPS = {
    "ensure_bridge": (bridge, "ensure_bridge", fail_before("ensure_bridge")),
    "enable_forwarding": (sysctl, "enable_forwarding", fail_before("enable_forwarding")),
    "create_pair": (veth, "create_pair", fail_before("create_pair")),
    "configure_container": (commands, "_configure_container", fail_before("configure_container")),
    "masq": (masq, "ensure", fail_before("masq.ensure")),
    # the step's work done, then a failure: what it made must go too
    "ensure_bridge-after": (bridge, "ensure_bridge", fail_after("ensure_bridge")),
    "enable_forwarding-after": (sysctl, "enable_forwarding", fail_after("enable_forwarding")),
    "configure_container-after": (
        commands,
        "_configure_container",
        fail_after("configure_container"),
    ),
    # an unexpected exception (a bug, not a NetError) unwinds the same way
    "configure_container-bug": (
        commands,
        "_configure_container",
        fail_before("configure_container", RuntimeError),
    ),
}


def assert_nothing_left(host, ctr: str) -> None:
    assert host.records("/netplug/attachments/") == {}
    assert host.records("/netplug/ips/") == {}
    assert host.veths() == set()
    assert run(["ip", "-n", ctr, "link", "show", "eth0"], check=False).returncode != 0
    assert "netplug-blue" not in host.nft_tables()


def assert_error_reply(reply, fragment: str) -> dict:
    assert reply.exit_code == 1, reply
    error = json.loads(reply.stdout)
    assert error["code"] not in (0, None) and fragment in error["msg"], error
    return error


@pytest.fixture(autouse=True)
def _root_ip_forward_untouched():
    """The handler runs in this process: prove it wrote only the test namespace's sysctl."""
    before = ROOT_IP_FORWARD.read_text()
    yield
    assert ROOT_IP_FORWARD.read_text() == before


@pytest.mark.parametrize("step", list(STEPS))
def test_failing_step_rolls_back_everything(plain_host, containers, host_netns, monkeypatch, step):
    module, name, failing = STEPS[step]
    conf = plain_host.conf(ipMasq=True)
    ctr = containers()
    monkeypatch.setattr(module, name, failing(getattr(module, name)))

    reply = add_in_process(host_netns, ctr, conf)

    assert_error_reply(reply, "injected failure in")
    assert_nothing_left(plain_host, ctr)
    # nothing stands in the way of the next attempt
    monkeypatch.undo()
    retry = add_in_process(host_netns, ctr, conf)
    assert retry.exit_code == 0, retry
    assert len(plain_host.records("/netplug/attachments/")) == 1


def test_create_pair_failing_after_the_kernel_made_the_pair(
    plain_host, containers, host_netns, monkeypatch
):
    """create_pair's own check ("vanished while being set up") fires after the link add."""
    conf = plain_host.conf(ipMasq=True)
    ctr = containers()
    # After the kernel made the pair, create_pair looks its peer up: make that fail.
    monkeypatch.setattr(veth.netns, "link_index", lambda path, name: None)

    reply = add_in_process(host_netns, ctr, conf)

    assert_error_reply(reply, "vanished")
    assert_nothing_left(plain_host, ctr)


def test_failing_undo_step_does_not_replace_the_original_error(
    plain_host, containers, host_netns, monkeypatch, caplog
):
    conf = plain_host.conf(ipMasq=True)
    ctr = containers()
    monkeypatch.setattr(commands, "_configure_container", fail_before("configure_container")(None))

    def delete(ipr, name):
        raise NetError(f"undo failed: cannot delete {name}")

    monkeypatch.setattr(links, "delete", delete)

    reply = add_in_process(host_netns, ctr, conf)

    error = assert_error_reply(reply, "injected failure in configure_container")
    assert "undo failed" not in error["msg"]
    assert "undo step 'delete veth' failed" in caplog.text  # the undo did raise
    # the undo steps after the failing one still ran: the addresses are released
    assert plain_host.records("/netplug/attachments/") == {}
    assert plain_host.records("/netplug/ips/") == {}


def test_an_undo_that_cannot_reach_the_store_defers_the_release(
    plain_host, containers, host_netns, monkeypatch
):
    """The store goes away between the allocation and the undo: the release is
    kept on the host, as DEL keeps it, and the next ADD settles it first."""
    conf = plain_host.conf()
    ctr = containers()
    monkeypatch.setattr(commands, "_configure_container", fail_before("configure_container")(None))

    def store_down(*args, **kwargs):
        raise StoreUnavailable("store down (injected)")

    monkeypatch.setattr(IPAM, "release", store_down)
    reply = add_in_process(host_netns, ctr, conf)

    assert_error_reply(reply, "injected failure in configure_container")
    assert len(plain_host.records("/netplug/attachments/")) == 1  # the store was "down"
    assert PendingReleases(conf["runDir"], conf["hostName"])
    monkeypatch.undo()  # the store is back, and the step works
    retry = add_in_process(host_netns, ctr, conf, container_id="c2")
    assert retry.exit_code == 0, retry
    attachments = plain_host.records("/netplug/attachments/")
    assert [key.rsplit("/", 2)[1] for key in attachments] == ["c2"]
    assert not PendingReleases(conf["runDir"], conf["hostName"])
