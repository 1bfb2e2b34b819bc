"""autostart's pure parts: the agent's command line and environment, and the
calls that never start one (the integration tests start real agents)."""

import json

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
