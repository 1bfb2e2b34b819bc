"""Store URL parsing and backend selection."""

from __future__ import annotations

import pytest

from netplug.ipam.store.base import StoreUnavailable
from netplug.ipam.store.etcd import EtcdStore
from netplug.ipam.store.sqlite import SQLiteStore
from netplug.ipam.store.url import DEFAULT_STORE_URL, StoreURL, open_store, parse_store_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (DEFAULT_STORE_URL, StoreURL("sqlite", path="/var/lib/netplug/netplug.db")),
        ("sqlite:////tmp/x.db", StoreURL("sqlite", path="//tmp/x.db")),
        ("etcd://10.0.0.1:2379", StoreURL("etcd", endpoints=(("10.0.0.1", 2379),))),
        ("etcd://etcd-0", StoreURL("etcd", endpoints=(("etcd-0", 2379),))),
        (
            "etcd://a:1,b,c:65535/",
            StoreURL("etcd", endpoints=(("a", 1), ("b", 2379), ("c", 65535))),
        ),
        (
            "etcd://[::1]:2380,[fd00::2]",
            StoreURL("etcd", endpoints=(("::1", 2380), ("fd00::2", 2379))),
        ),
        ("etcds://h:2379", StoreURL("etcds", endpoints=(("h", 2379),))),
        (
            "etcds://h:1?cacert=/ca.pem&cert=/c.pem&key=/k.pem",
            StoreURL("etcds", endpoints=(("h", 1),), cacert="/ca.pem", cert="/c.pem", key="/k.pem"),
        ),
        (
            "etcds://[::1]?cacert=/ca.pem",
            StoreURL("etcds", endpoints=(("::1", 2379),), cacert="/ca.pem"),
        ),
    ],
)
def test_parse(url: str, expected: StoreURL) -> None:
    assert parse_store_url(url) == expected


@pytest.mark.parametrize(
    ("url", "fix"),
    [
        ("foo://x", "unknown scheme 'foo': use sqlite:///ABSOLUTE/PATH or etcd://"),
        ("/var/lib/netplug.db", "no scheme"),
        ("", "no scheme"),
        ("sqlite://relative.db", "absolute path"),
        ("sqlite://", "absolute path"),
        ("sqlite:///var/lib/", "add a file name"),
        ("etcd://", "no hosts"),
        ("etcd://a:2379,", "bad endpoint ''"),
        ("etcd://:2379", "bad endpoint"),
        ("etcd://a:b", "bad port 'b'"),
        ("etcd://a:0", "bad port"),
        ("etcd://a:65536", "bad port"),
        ("etcd://a:-1", "bad port"),
        ("etcd://a:2379/v3", "has a path"),
        ("etcd://::1", "needs brackets"),
        ("etcd://[::1", "bad IPv6 endpoint"),
        ("etcd://[::1]2379", "bad IPv6 endpoint"),
        ("etcd://[]:2379", "bad endpoint"),
        ("etcd://h?cacert=/ca.pem", "use etcds://"),
        ("etcds://h?ca=/ca.pem", "bad option 'ca=/ca.pem'"),
        ("etcds://h?cacert=", "bad option"),
        ("etcds://h?cacert=/a&cacert=/b", "at most once"),
        ("etcds://h?cert=/c.pem", "both cert=PATH and key=PATH"),
        ("sqlite:///var/lib/a\0b.db", "control or invalid character"),
        ("sqlite:///var/lib/\ud800.db", "control or invalid character"),
        ("etcd://a\nb:2379", "control or invalid character"),
    ],
)
def test_parse_rejects(url: str, fix: str) -> None:
    with pytest.raises(ValueError, match="store URL") as info:
        parse_store_url(url)
    assert fix in str(info.value)


def test_open_sqlite(tmp_path) -> None:
    path = tmp_path / "state" / "netplug.db"
    store = open_store(f"sqlite://{path}")
    try:
        assert isinstance(store, SQLiteStore)
        assert store.url == f"sqlite://{path}"
        assert store.status() == 0
        assert path.exists()
    finally:
        store.close()


def test_open_store_returns_a_new_store_each_time(tmp_path) -> None:
    url = f"sqlite://{tmp_path}/s.db"
    first, second = open_store(url), open_store(url)
    try:
        assert first is not second
    finally:
        first.close()
        second.close()


def test_open_etcd_connects_lazily() -> None:
    url = "etcd://127.0.0.1:1,[::1]:2"
    store = open_store(url)  # nothing listens there: nothing is tried yet
    try:
        assert isinstance(store, EtcdStore)
        assert store.url == url
    finally:
        store.close()


def test_open_etcds_with_missing_tls_files(tmp_path) -> None:
    with pytest.raises(StoreUnavailable, match="cacert="):
        open_store(f"etcds://h?cacert={tmp_path}/missing.pem")


def test_open_bad_url() -> None:
    with pytest.raises(ValueError, match="unknown scheme"):
        open_store("redis://h")
