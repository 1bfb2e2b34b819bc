"""Fixtures for tests that drive real CNI clients (podman, cbcni) inside `npt-*` namespaces.

Every fixture tears down in `finally` (via the context managers in runtimes.py). Tests that
put netplug's executables in front of the reference plugins override `cni_plugin_dirs`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from runtimes import REFERENCE_PLUGIN_DIR, Cbcni, Podman, make_netns, require_root


@pytest.fixture
def cni_plugin_dirs() -> list[Path]:
    """CNI plugin search path for `cbcni` and `podman`; override to put netplug first."""
    return [REFERENCE_PLUGIN_DIR]


@pytest.fixture
def host_netns() -> Iterator[str]:
    """A fresh `npt-*` netns standing in for the host: runtimes and plugins run here."""
    require_root()
    with make_netns("npt-host-") as name:
        yield name


@pytest.fixture
def container_netns() -> Iterator[str]:
    """A fresh `npt-*` netns standing in for a container (for cbcni)."""
    require_root()
    with make_netns("npt-ctr-") as name:
        yield name


@pytest.fixture
def cbcni(tmp_path: Path, host_netns: str, cni_plugin_dirs: list[Path]) -> Cbcni:
    """cbcni running in `host_netns`, with conf and cache dirs under `tmp_path`."""
    return Cbcni(
        conf_dir=tmp_path / "net.d",
        plugin_dirs=cni_plugin_dirs,
        cache_dir=tmp_path / "cni-cache",
        host_netns=host_netns,
    )


@pytest.fixture
def podman(host_netns: str, cni_plugin_dirs: list[Path]) -> Iterator[Podman]:
    """Rootful podman (CNI backend) in `host_netns`; containers and state removed after."""
    with Podman(host_netns, cni_plugin_dirs) as p:
        yield p


from netplug_fixtures import (  # noqa: E402, F401
    containers,
    lab,
    lab_hosts,
    netplug_host,
    plain_host,
    servers,
)
