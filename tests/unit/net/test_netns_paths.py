"""open_netns tells a network namespace from whatever else a CNI_NETNS may name
(no root needed: this process's own namespace files are readable)."""

import os

import pytest

from netplug.net import netns


def test_a_network_namespace_opens():
    fd = netns.open_netns("/proc/self/ns/net")
    try:
        assert os.path.samestat(os.fstat(fd), os.stat("/proc/self/ns/net"))
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda p: p.touch(), "is a regular file"),  # an unmounted /run/netns/NAME
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: os.mkfifo(p), "is not a regular file"),  # opening it would block
    ],
    ids=["regular-file", "directory", "fifo"],
)
def test_what_is_no_namespace_is_named(tmp_path, make, says):
    path = tmp_path / "netns"
    make(path)
    with pytest.raises(netns.NotANetns, match=f"^{path} {says}$"):
        netns.open_netns(str(path))


def test_another_kind_of_namespace_is_not_a_network_namespace():
    with pytest.raises(netns.NotANetns, match="another kind of namespace"):
        netns.open_netns("/proc/self/ns/mnt")


@pytest.mark.parametrize("path", ["/run/netns/npt-no-such-namespace", "/etc/hostname/net"])
def test_nothing_there_is_not_found_and_no_other_kind(path):
    with pytest.raises(netns.NetnsNotFound) as e:
        netns.open_netns(path)
    assert type(e.value) is netns.NetnsNotFound


@pytest.mark.parametrize(
    ("path", "seen_by", "expected"),
    [
        ("/run/netns/ctr", 0, "/run/netns/ctr"),  # this process's own view
        ("/run/netns/ctr", 42, "/proc/42/root/run/netns/ctr"),  # as the plugin sees it
        ("relative/ns", 42, "relative/ns"),  # not a path under a root: left as given
    ],
)
def test_paths_resolve_as_the_named_process_sees_them(path, seen_by, expected):
    assert netns.resolved(path, seen_by) == expected


def test_a_namespace_opens_through_a_process_root():
    fd = netns.open_netns("/proc/self/ns/net", seen_by=os.getpid())
    try:
        assert os.path.samestat(os.fstat(fd), os.stat("/proc/self/ns/net"))
    finally:
        os.close(fd)
    assert netns.is_current("/proc/self/ns/net", seen_by=os.getpid())


def test_errors_name_the_path_as_given():
    with pytest.raises(netns.NetnsNotFound, match=r"^network namespace /run/netns/npt-none does"):
        netns.open_netns("/run/netns/npt-none", seen_by=os.getpid())
