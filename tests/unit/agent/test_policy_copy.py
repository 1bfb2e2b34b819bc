"""The agent's copy of the store's policies on the host (what `netplugctl recover`
writes back into a reset store), kept by a store view part in each runDir the
agent knows."""

from __future__ import annotations

import json

from netplug.agent.policy_copy import WATCHED, PolicyCopy
from netplug.agent.run_dirs import RunDirs
from netplug.agent.store_view import StoreView
from netplug.agent.supervisor import Backoff, Supervisor
from netplug.cni import local_records
from netplug.host import Host
from netplug.ipam import policies
from netplug.ipam.schema import Policies
from netplug.ipam.store.base import KeyValue
from netplug.policy.model import parse

from waiting import wait_for


def quarantine(*names: str):
    doc = {"name": "quarantine", "network": "blue", "select": {"names": list(names)}}
    return parse(json.dumps({**doc, "ingress": []}), {"blue"})


def test_the_copy_follows_the_stores_policies_in_each_run_dir(tmp_path) -> None:
    host = Host.open("h1", f"sqlite://{tmp_path / 'netplug.db'}")
    own, named = str(tmp_path / "own"), str(tmp_path / "named")
    run_dirs = RunDirs([own])
    view, supervisor = StoreView(host.store), Supervisor(Backoff(initial=0.02))
    copy = PolicyCopy("h1", run_dirs)
    supervisor.start("policy-copy", view.subscribe("policy-copy", WATCHED).runs(copy.follow))
    supervisor.start("store-view", view.run)

    def kept(run_dir: str):
        return local_records.read_policies(run_dir, "h1")

    try:
        assert wait_for(lambda: kept(own) == [])  # the first full read: none
        policies.apply(host.store, quarantine("suspect"))
        assert wait_for(lambda: kept(own) == policies.documents(quarantine("suspect")))
        run_dirs.learn(named)  # a runDir a served call named: at the next change
        policies.apply(host.store, quarantine("suspect", "other"))
        want = policies.documents(quarantine("suspect", "other"))
        assert wait_for(lambda: kept(own) == kept(named) == want)
        policies.delete(host.store, "quarantine")
        assert wait_for(lambda: kept(own) == kept(named) == [])
    finally:
        supervisor.stop(5)
        host.close()


def test_a_run_dir_the_copy_cannot_be_written_in_spares_the_others(tmp_path, caplog) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the runDir should be")
    good = str(tmp_path / "good")
    copy = PolicyCopy("h1", RunDirs([str(blocked), good]))
    records = [KeyValue(Policies.key("quarantine"), Policies.encode(quarantine("s")[0]), 1, 1, 1)]
    for _ in range(2):
        copy.keep(records)
    assert local_records.read_policies(good, "h1") == policies.documents(quarantine("s"))
    assert caplog.text.count(f"cannot keep the policy copy in {blocked}") == 1
