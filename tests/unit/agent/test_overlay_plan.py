"""The VXLAN peers a host should program: a pure function of the store's records."""

from ipaddress import ip_network

import pytest

from netplug.agent.overlay_plan import Vtep, desired, diff
from netplug.net.peers import PeerState

H2 = Vtep("blue", "h2", "192.0.2.12", "02:00:00:00:00:02", 4242)
H3 = Vtep("blue", "h3", "192.0.2.13", "02:00:00:00:00:03", 4242)
ME = Vtep("blue", "h1", "192.0.2.11", "02:00:00:00:00:01", 4242)
B1, B2, B3 = (ip_network(f"10.244.{i}.0/24") for i in (1, 2, 3))
B2B = ip_network("10.244.20.0/24")


def state(routes=(), neighbours=(), fdb=()) -> PeerState:
    return PeerState(frozenset(routes), frozenset(neighbours), frozenset(fdb))


def peer(vtep: Vtep, *blocks) -> PeerState:
    """What one peer holding ``blocks`` contributes."""
    return state(
        [(str(b), str(b.network_address)) for b in blocks],
        [(str(b.network_address), vtep.mac) for b in blocks],
        [(vtep.mac, vtep.address)],
    )


def union(*states: PeerState) -> PeerState:
    return PeerState(
        frozenset().union(*(s.routes for s in states)),
        frozenset().union(*(s.neighbours for s in states)),
        frozenset().union(*(s.fdb for s in states)),
    )


@pytest.mark.parametrize(
    ("live", "vteps", "blocks", "expected"),
    [
        pytest.param({"h1"}, [ME], {B1: "h1"}, state(), id="alone"),
        pytest.param({"h1", "h2"}, [ME, H2], {B1: "h1", B2: "h2"}, peer(H2, B2), id="one-peer"),
        pytest.param(
            {"h1", "h2"},
            [ME, H2],
            {B1: "h1", B2: "h2", B2B: "h2"},
            peer(H2, B2, B2B),
            id="peer-with-a-second-block",
        ),
        pytest.param({"h1"}, [ME, H2], {B2: "h2"}, state(), id="peer-whose-lease-expired"),
        pytest.param(
            {"h1", "h2"},
            [ME],
            {B2: "h2"},
            state(),
            id="peer-without-a-vtep-in-this-network",
        ),
        pytest.param(
            {"h1", "h2", "h3"},
            [ME, H2, H3],
            {B1: "h1", B2: "h2"},
            union(peer(H2, B2), state(fdb=[(H3.mac, H3.address)])),
            id="peer-without-blocks-gets-only-its-fdb-entry",
        ),
        pytest.param(
            {"h1", "h2", "h3"},
            [ME, H2, H3],
            {B1: "h1", B2: "h2", B3: "h3"},
            union(peer(H2, B2), peer(H3, B3)),
            id="two-peers",
        ),
    ],
)
def test_desired(live, vteps, blocks, expected):
    assert desired("h1", live, vteps, blocks) == expected


@pytest.mark.parametrize(
    ("have", "want", "add", "remove"),
    [
        pytest.param(state(), state(), state(), state(), id="nothing"),
        pytest.param(state(), peer(H2, B2), peer(H2, B2), state(), id="all-new"),
        pytest.param(peer(H2, B2), state(), state(), peer(H2, B2), id="all-stale"),
        pytest.param(peer(H2, B2), peer(H2, B2), state(), state(), id="in-step"),
        pytest.param(
            peer(H2, B2),
            peer(H2, B2, B2B),
            state([(str(B2B), "10.244.20.0")], [("10.244.20.0", H2.mac)]),
            state(),
            id="a-peers-second-block",
        ),
        pytest.param(
            union(peer(H2, B2), peer(H3, B3)),
            peer(H3, B3),
            state(),
            peer(H2, B2),
            id="a-peer-leaves",
        ),
    ],
)
def test_diff(have, want, add, remove):
    assert diff(have, want) == (add, remove)
