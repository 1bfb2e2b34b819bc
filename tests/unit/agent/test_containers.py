"""The enforcer's containers: the feed's, less DEL's, plus ADD's, kept up to date
from the keys touched (``Containers.refresh``)."""

from __future__ import annotations

from ipaddress import ip_address

from netplug.agent.containers import Containers
from netplug.cni.segmentation import Inputs, Reader
from netplug.ipam.store.base import Event, KeyValue
from netplug.policy.plan import Endpoint

HERE = Endpoint("red", "h1", (ip_address("10.1.0.5"),), frozenset(["db"]))
THERE = Endpoint("red", "h2", (ip_address("10.1.1.5"),), frozenset(["web"]))


def test_the_view_is_the_feed_less_what_del_uncovered_plus_what_add_covered():
    c = Containers("h1")
    c.take(Inputs(endpoints={"a": HERE, "b": THERE}))
    assert c.refresh() is None  # a full feed: compared whole
    assert c.endpoints == {"a": HERE, "b": THERE} and c.local == {"a": HERE}
    version = c.version
    c.uncover("a")
    c.cover("n", THERE)
    assert not c.fresh and c.refresh() == {"a", "n"} and c.version == version + 1
    assert c.endpoints == {"b": THERE, "n": THERE} and c.local == {}
    c.cover("n", Endpoint("red", "h2", (ip_address("10.1.1.5"),), frozenset(["web"])))
    assert c.refresh() == set() and c.version == version + 1  # equal: no change


def test_an_incremental_feed_touches_only_what_it_changed():
    c = Containers("h1")
    reader = Reader()
    c.take(reader.inputs([]))
    c.refresh()
    c.uncover("gone")  # DEL of a container the feed never had: nothing to hide
    c.cover("x", HERE)  # ADD before its record
    c.refresh()
    fed = reader.apply(
        [Event("delete", KeyValue("/netplug/attachments/red/h2/y/eth0", b"", 0, 5, 0))]
    )
    c.take(fed)  # ADD's x is not in the feed yet: still covered
    assert c.refresh() == set() and c.endpoints == {"x": HERE}
    assert c.fresh and c.holds("x") and not c.holds("gone")
