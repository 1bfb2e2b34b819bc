"""DEL answers once the kernel has unlisted the veth, not after the RCU waits
that follow inside the deletion's request (``netplug.net.unlink``)."""

from __future__ import annotations

import subprocess
import threading

import pytest

from netplug.net import links, netns, unlink
from netplug.net.rtnl import Rtnl

pytestmark = pytest.mark.netns


def test_delete_returns_at_the_notification_while_the_request_still_runs(host_netns: str):
    """The request deletes the link, then stands for the kernel's tail (it blocks
    until released): ``delete`` must have returned, the link gone, before that."""
    subprocess.run(
        ["ip", "-n", host_netns, "link", "add", "unl0", "type", "veth", "peer", "unl1"], check=True
    )
    release, finished = threading.Event(), threading.Event()

    def request() -> bool:
        rt = Rtnl()
        try:
            deleted = links.delete(rt, "unl0")
        finally:
            rt.close()
        release.wait(10)
        finished.set()
        return deleted

    try:
        with netns.entered(f"/run/netns/{host_netns}"):
            index = links.index("unl0")
            assert index is not None
            assert unlink.delete(request, index, 5.0) is True
            assert not finished.is_set()
            assert links.index("unl0") is None
    finally:
        release.set()
    assert finished.wait(5)
