"""Which gateways netplugd's DNS listens on: a pure function of the blocks."""

from ipaddress import ip_network

import pytest

from netplug.agent.dns import wanted_listeners
from netplug.dns.server import Listener

B1, B2 = ip_network("10.244.1.0/24"), ip_network("10.244.2.0/24")
B10 = ip_network("10.244.10.0/24")
V6 = ip_network("fd00:244:0:1::/64")
GREEN = ip_network("10.245.7.0/24")


@pytest.mark.parametrize(
    ("blocks", "expected"),
    [
        pytest.param({}, [], id="no-blocks"),
        pytest.param({"blue": {B1: "h2"}}, [], id="only-another-hosts-block"),
        pytest.param({"blue": {B1: "h1"}}, [Listener("10.244.1.1", 53, "blue")], id="one-block"),
        pytest.param(
            # The 254th container of a /24: a second block of the same network.
            {"blue": {B2: "h1", B1: "h1", B10: "h1"}},
            [
                Listener("10.244.1.1", 53, "blue"),
                Listener("10.244.2.1", 53, "blue"),
                Listener("10.244.10.1", 53, "blue"),  # by address, not as text
            ],
            id="second-block-of-a-network",
        ),
        pytest.param(
            {"blue": {V6: "h1", B1: "h1"}},
            [Listener("10.244.1.1", 53, "blue"), Listener("fd00:244:0:1::1", 53, "blue")],
            id="dual-stack",
        ),
        pytest.param(
            {"green": {GREEN: "h1"}, "blue": {B1: "h1", B2: "h2"}},
            [Listener("10.244.1.1", 53, "blue"), Listener("10.245.7.1", 53, "green")],
            id="second-network",
        ),
    ],
)
def test_wanted_listeners(blocks, expected):
    assert wanted_listeners("h1", blocks) == expected


def test_the_order_does_not_depend_on_the_stores():
    one = {"blue": {B1: "h1", V6: "h1"}, "green": {GREEN: "h1"}}
    other = {"green": {GREEN: "h1"}, "blue": {V6: "h1", B1: "h1"}}
    assert wanted_listeners("h1", one) == wanted_listeners("h1", other)


def test_the_port_is_the_callers():
    assert wanted_listeners("h1", {"blue": {B1: "h1"}}, port=5353) == [
        Listener("10.244.1.1", 5353, "blue")
    ]
