"""autostart's pure parts: the agent's command line and environment, the calls
that never start one, and the fallback from a failing systemd-run with fake
executables (the integration tests start real agents)."""

import json
import os
import time

import pytest

from netplug.agent.daemon import parse_args
from netplug.cni import autostart
from netplug.cni.autostart import AgentFiles, agent_argv, agent_env
from netplug.cni.netconf import parse_netconf

RAW = {
    "cniVersion": "1.0.0",
    "name": "blue",
    "type": "netplug",
    "subnet": "10.244.0.0/16",
    "store": "sqlite:///var/lib/x.db",
    "hostName": "node-7",
    "runDir": "/run/np",
    "dns": {"domain": "corp.example"},
}
ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/x"}


def test_the_agent_serves_the_configs_store_host_run_dir_and_domain():
    conf = parse_netconf({**RAW, "vxlan": {"device": "ens3"}}, {})
    files = AgentFiles.of(conf)
    argv = agent_argv(conf, files, "/venv/bin/python", None)
    assert argv[:4] == ["/venv/bin/python", "-I", "-m", "netplug.agent.daemon"]
    args = parse_args(argv[4:])  # netplugd takes exactly what the plugin passes
    assert (args.store, args.host_name, args.run_dir, args.domain) == (
        "sqlite:///var/lib/x.db",
        "node-7",
        "/run/np",
        "corp.example",
    )
    assert args.pid_file == "/run/np/node-7/netplugd.pid" == files.pid
    assert args.underlay_device == "ens3"
    assert files.log == "/run/np/node-7/netplugd.log"


def test_under_systemd_it_gets_a_scope_of_its_own():
    conf = parse_netconf(RAW, {})
    argv = agent_argv(conf, AgentFiles.of(conf), "/py", "/usr/bin/systemd-run")
    assert argv[:5] == ["/usr/bin/systemd-run", "--scope", "--quiet", "--collect", "/py"]


def test_the_agent_gets_no_cni_variables_and_always_a_path():
    env = agent_env({**ENV, "NETPLUG_FAULTS": "agent-start", "HOME": "/root"})
    assert env == {"NETPLUG_FAULTS": "agent-start", "HOME": "/root", "PATH": autostart.DEFAULT_PATH}
    assert agent_env({"PATH": "/bin"})["PATH"] == "/bin"


@pytest.mark.parametrize(
    "stdin",
    [
        json.dumps({**RAW, "agent": {"autostart": False}}).encode(),  # turned off
        b"{not json",  # in-process reports it
        json.dumps({**RAW, "subnet": "bad"}).encode(),
    ],
    ids=["off", "garbled", "invalid"],
)
def test_no_agent_is_started_when_off_or_for_a_config_that_does_not_parse(
    stdin, monkeypatch, tmp_path
):
    monkeypatch.setattr(autostart, "_spawn", lambda *a: pytest.fail("started an agent"))
    raw = {**RAW, "runDir": str(tmp_path)}
    stdin = stdin.replace(b'"/run/np"', json.dumps(raw["runDir"]).encode())
    assert autostart.ensure(ENV, stdin) is False
    assert list(tmp_path.iterdir()) == []  # not even its lock file


# A start through systemd-run, with real executables in a tmp dir standing in for
# systemd-run and for the plugin's interpreter (the agent): no agent runs.
FAKE_AGENT = """#!/bin/sh
# As netplugd once it serves: its PID in --pid-file (status 0), else it exits first.
while [ $# -gt 0 ]; do
  if [ "$1" = --pid-file ] && [ {status} = 0 ]; then echo $$ > "$2"; fi
  shift
done
exit {status}
"""
REFUSING_SYSTEMD_RUN = """#!/bin/sh
echo "$@" > "{ran}"
echo "Failed to start transient scope unit: Interactive authentication required." >&2
exit 1
"""
WORKING_SYSTEMD_RUN = """#!/bin/sh
echo "$@" > "{ran}"
shift 3  # --scope --quiet --collect
exec "$@"
"""


@pytest.fixture
def fake_host(monkeypatch, tmp_path):
    """A config under tmp_path, systemd "booted", and ``install(systemd_run,
    agent_status)`` to put the two fake executables in place."""
    booted = tmp_path / "systemd-booted"
    booted.mkdir()
    monkeypatch.setattr(autostart, "SYSTEMD_BOOTED", str(booted))
    monkeypatch.setattr(autostart.client, "query", lambda *a, **kw: None)  # none listens
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    raw = {**RAW, "runDir": str(tmp_path / "run"), "logFile": str(tmp_path / "netplug.log")}
    conf = parse_netconf(raw, {})
    files = AgentFiles.of(conf)
    (tmp_path / "run" / "node-7").mkdir(parents=True)

    def install(systemd_run: str, agent_status: int = 0) -> None:
        for path, text in (
            (bin_dir / "systemd-run", systemd_run.format(ran=tmp_path / "systemd-run.args")),
            (tmp_path / "python", FAKE_AGENT.format(status=agent_status)),
        ):
            path.write_text(text)
            path.chmod(0o755)
        monkeypatch.setattr(autostart.sys, "executable", str(tmp_path / "python"))

    return conf, files, install, tmp_path


def test_a_systemd_run_that_fails_fast_is_followed_by_a_plain_start(fake_host):
    conf, files, install, tmp_path = fake_host
    install(REFUSING_SYSTEMD_RUN)
    assert autostart._serving_or_started(conf, files) is True  # not in-process
    ran = (tmp_path / "systemd-run.args").read_text()
    assert ran.startswith(f"--scope --quiet --collect {tmp_path / 'python'} -I -m ")
    log = (tmp_path / "netplug.log").read_text()
    assert "netplugd under systemd-run: it exited with status 1; starting it without" in log
    assert "started netplugd (pid " in log and "WARNING" not in log
    assert not os.path.exists(files.failed)


def test_a_working_systemd_run_starts_the_agent_once_in_its_scope(fake_host):
    conf, files, install, tmp_path = fake_host
    install(WORKING_SYSTEMD_RUN)
    assert autostart._serving_or_started(conf, files) is True
    assert (tmp_path / "systemd-run.args").exists()
    log = (tmp_path / "netplug.log").read_text()
    assert log.count("started netplugd (pid ") == 1 and "without" not in log


def test_an_agent_that_fails_either_way_leaves_the_call_in_process(fake_host):
    conf, files, install, tmp_path = fake_host
    install(WORKING_SYSTEMD_RUN, agent_status=3)
    started = time.monotonic()
    assert autostart._serving_or_started(conf, files) is False
    assert time.monotonic() - started < autostart.SERVE_WAIT
    log = (tmp_path / "netplug.log").read_text()
    assert "netplugd under systemd-run: it exited with status 3; starting it without" in log
    assert "WARNING netplugd could not be started for host node-7 (it exited with status 3" in log
    assert os.path.exists(files.failed)  # the backoff
