"""Store fixtures: ``store`` runs each test that takes it (the store contract,
the IPAM) against both backends: SQLite in ``tmp_path``, and a real etcd, one
per session, emptied before each test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from netplug.ipam.store.base import Store
from netplug.ipam.store.sqlite import SQLiteStore
from netplug.ipam.store.url import open_store

from etcd_server import EtcdProcess, start_etcd

# Shortest lease TTL each backend honours: etcd counts whole seconds.
SHORT_TTL = {"sqlite": 0.3, "etcd": 1.0}


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdProcess]:
    """One etcd member on 127.0.0.1 for the session (skipped, or failed on CI, without it)."""
    etcd = start_etcd(tmp_path_factory.mktemp("etcd"))
    try:
        yield etcd
    finally:
        etcd.stop()


@pytest.fixture(params=["sqlite", "etcd"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def store(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Store]:
    """An empty store of either backend; revisions start at ``store.status()``."""
    if backend == "sqlite":
        s: Store = SQLiteStore(str(tmp_path / "state" / "netplug.db"), poll_interval=0.002)
    else:
        etcd: EtcdProcess = request.getfixturevalue("etcd_server")
        etcd.reset()
        s = open_store(etcd.url)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def ttl(backend: str) -> float:
    """A lease TTL short enough for tests that wait for expiry."""
    return SHORT_TTL[backend]
