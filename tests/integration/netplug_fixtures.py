"""Fixtures for netplug's own integration tests (imported by conftest.py).

``netplug_host`` runs every test that uses it twice: once with netplugd serving
the plugin and once without, since DESIGN requires the same behaviour both ways.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from netplug.lab.lab import Lab

from netplug_env import NetplugHost
from runtimes import make_netns, require_commands, require_root
from traffic import server_starter


@pytest.fixture(params=["agent", "in-process"])
def netplug_host(
    request: pytest.FixtureRequest, host_netns: str, tmp_path: Path
) -> Iterator[NetplugHost]:
    """A host namespace with netplug's store and dirs; with or without its agent."""
    require_root()
    host = NetplugHost(host_netns, tmp_path / "host")
    if request.param == "agent":
        with host.agent():
            yield host
    else:
        yield host


@pytest.fixture
def plain_host(host_netns: str, tmp_path: Path) -> NetplugHost:
    """A host namespace with netplug's store and dirs, no agent (for one-mode tests)."""
    require_root()
    return NetplugHost(host_netns, tmp_path / "host")


@pytest.fixture
def containers() -> Iterator[Callable[[], str]]:
    """A factory of fresh container namespaces, all deleted after the test."""
    require_root()
    with ExitStack() as stack:
        yield lambda: stack.enter_context(make_netns("npt-ctr-"))


@pytest.fixture
def servers() -> Iterator[Callable[[str], None]]:
    """Start a TCP server (``traffic.SERVER``) in each given namespace; killed after."""
    with server_starter() as start:
        yield start


@pytest.fixture(params=["sqlite", "etcd"])
def lab(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Lab]:
    """A netns-lab of its own (private namespace prefix and state dir), torn down after;
    every test that uses it runs on the embedded store and on a real etcd."""
    require_root()
    if request.param == "etcd":
        require_commands("etcd", packages="etcd-server")
    lab = Lab(tmp_path / "lab", say=lambda text: None, prefix=f"npt-l{uuid.uuid4().hex[:6]}-")
    lab.store_kind = request.param
    try:
        yield lab
    finally:
        lab.down()


@pytest.fixture
def lab_hosts(lab: Lab, tmp_path: Path) -> Callable[[int], dict[str, NetplugHost]]:
    """``lab_hosts(n)``: ``lab`` up with ``n`` hosts on its store kind, each as a
    NetplugHost by name (its config dirs under ``tmp_path``); set ``lab.agent_args``
    before the call for flags of the agents."""

    def up(count: int) -> dict[str, NetplugHost]:
        lab.up(count, lab.store_kind)
        state = lab.state.load()
        return {
            name: NetplugHost(host["netns"], tmp_path / name, name, state["store"])
            for name, host in state["hosts"].items()
        }

    return up
