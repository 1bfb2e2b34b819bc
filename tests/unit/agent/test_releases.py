"""The release replay as an agent part: the runDirs it knows (the agent's own,
and each one a served call named, told explicitly), replayed when the store
view reads the store in full (at start, and when the store answers again)
and every PENDING_INTERVAL seconds."""

from __future__ import annotations

from netplug.agent.releases import PENDING_INTERVAL, ReleaseReplay
from netplug.agent.run_dirs import RunDirs
from netplug.agent.store_view import StoreView
from netplug.agent.supervisor import Backoff, Supervisor
from netplug.host import Host
from netplug.ipam.pending import PendingReleases

from waiting import wait_for


def test_the_replay_runs_at_the_first_full_read_and_in_each_run_dir_learnt(tmp_path) -> None:
    host = Host.open("h1", f"sqlite://{tmp_path / 'netplug.db'}")
    own, named = str(tmp_path / "own"), str(tmp_path / "named")
    pending = {d: PendingReleases(d, "h1") for d in (own, named)}
    for entries in pending.values():
        entries.record("blue", "c1", "eth0", "/proc/1/ns/net")
    run_dirs = RunDirs([own])
    replay = ReleaseReplay(host, run_dirs)
    view, supervisor = StoreView(host.store), Supervisor(Backoff(initial=0.02))
    supervisor.start("pending-releases", view.subscribe("pending-releases").runs(replay.follow))
    supervisor.start("store-view", view.run)
    try:
        # At start, not PENDING_INTERVAL later: the view's first read is its cue.
        assert wait_for(lambda: not pending[own], PENDING_INTERVAL / 2)
        assert pending[named]  # a runDir no call has named yet
        run_dirs.learn(named)  # as the plugin server tells it of a call it serves
        assert wait_for(lambda: not pending[named], PENDING_INTERVAL * 2)
    finally:
        supervisor.stop(5)
        host.close()
