"""Which link holds a network's gateway, asked when ADD is to make the bridge: its
own bridge is fine (a concurrent ADD made it since this one found none), any other
link is the config's ``bridge`` changed under a network with containers."""

from __future__ import annotations

from ipaddress import ip_interface

import pytest

from netplug.net import bridge, netns

from runtimes import make_netns, require_root, run

pytestmark = pytest.mark.netns

GATEWAYS = (ip_interface("10.244.7.1/24"), ip_interface("fd00:244:7::1/64"))


@pytest.fixture
def host() -> str:
    require_root()
    with make_netns("npt-gw-") as ns:
        for name in ("np-blue", "br-other"):
            run(["ip", "-n", ns, "link", "add", name, "type", "bridge"])
        yield ns


def _hold(ns: str, link: str) -> None:
    for gateway in GATEWAYS:
        run(["ip", "-n", ns, "addr", "add", str(gateway), "dev", link, "nodad"])


def _check(ns: str, name: str) -> None:
    with netns.handle(f"/run/netns/{ns}") as ipr:
        bridge._require_gateways_free(ipr, name, GATEWAYS)


def test_gateways_on_the_bridge_itself_are_free_for_it(host: str) -> None:
    """What a parallel first ADD sees: the bridge was missing when it looked, and a
    concurrent ADD has made it and put the gateways on it since. The check read the
    bridge's index before the address dump (none yet), so the gateways' holder was
    "another link" and ADD failed with code 7 naming the bridge as the other one."""
    _hold(host, "np-blue")
    _check(host, "np-blue")


def test_gateways_on_another_link_are_refused_naming_it(host: str) -> None:
    _hold(host, "br-other")
    with pytest.raises(bridge.GatewayElsewhere, match=r"on br-other already.*names bridge np-blue"):
        _check(host, "np-blue")
