"""The lab's choice of a new network's subnet (pure, no root)."""

from __future__ import annotations

import pytest

from netplug.lab.lab import SUBNET, choose_subnet


@pytest.mark.parametrize(
    ("given", "taken", "chosen"),
    [
        (None, [SUBNET], "10.245.0.0/16"),
        (None, [SUBNET, "10.245.0.0/16", "10.246.0.0/17"], "10.247.0.0/16"),
        (None, [SUBNET, *(f"10.{n}.0.0/16" for n in range(245, 256))], "10.1.0.0/16"),
        ("10.250.0.0/16", [SUBNET], "10.250.0.0/16"),
        ("172.16.0.0/24", [SUBNET], "172.16.0.0/24"),
    ],
)
def test_a_new_network_gets_the_given_or_the_first_free_subnet(given, taken, chosen):
    assert str(choose_subnet(given, taken)) == chosen


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("10.244.3.0/24", "--subnet 10.244.3.0/24 overlaps 10.244.0.0/16, used by another"),
        ("10.0.0.0/8", "overlaps 10.244.0.0/16"),
        ("10.300.0.0/16", "--subnet 10.300.0.0/16: "),
        ("10.250.0.1/16", "has host bits set"),
        ("fd00::/48", "expected an IPv4 range of /24 or larger"),
        ("10.250.0.0/25", "expected an IPv4 range of /24 or larger"),
    ],
)
def test_a_bad_or_overlapping_subnet_is_refused_with_a_reason(given, says):
    with pytest.raises(RuntimeError) as raised:
        choose_subnet(given, [SUBNET])
    assert says in str(raised.value)


def test_no_free_subnet_left_says_to_give_one():
    with pytest.raises(RuntimeError, match=r"no free /16 left in 10\.0\.0\.0/8: give --subnet"):
        choose_subnet(None, ["10.0.0.0/8"])
