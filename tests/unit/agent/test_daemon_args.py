"""netplugd's options: a host name goes into store keys, so it is checked; its PID file."""

import os

import pytest

from netplug.agent.daemon import PidFile, parse_args


@pytest.mark.parametrize("name", ["h1/evil", "..", "_x", "a b", "a" * 254])
def test_an_invalid_host_name_is_refused(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--host-name", name])
    assert exit_.value.code == 2
    assert f"argument --host-name: {name!r} is not a valid host name" in capsys.readouterr().err


def test_the_default_from_netplug_hostname_is_checked_too(monkeypatch, capsys):
    monkeypatch.setenv("NETPLUG_HOSTNAME", "h1/evil")
    with pytest.raises(SystemExit):
        parse_args([])
    assert "'h1/evil' is not a valid host name" in capsys.readouterr().err


def test_a_fully_qualified_host_name_is_fine():
    assert parse_args(["--host-name", "node-1.example.com"]).host_name == "node-1.example.com"


def test_the_pid_file_names_this_agent_and_is_removed_only_while_it_does(tmp_path):
    path = tmp_path / "netplugd.pid"
    pid_file = PidFile(str(path))
    pid_file.write()
    assert path.read_text() == f"{os.getpid()}\n"
    pid_file.remove()
    assert not path.exists()
    path.write_text("1\n")  # another agent's (a second one that was refused)
    pid_file.remove()
    assert path.read_text() == "1\n"
    PidFile(None).write()  # no --pid-file: nothing written, nothing to remove
    PidFile(None).remove()


@pytest.mark.parametrize("flag", ["--counters-period", "--recover-grace"])
def test_periods_take_seconds_and_refuse_negative_ones(flag, capsys):
    assert getattr(parse_args([flag, "2.5"]), flag[2:].replace("-", "_")) == 2.5
    with pytest.raises(SystemExit):
        parse_args([flag, "-1"])
    assert "expected seconds, 0 or more" in capsys.readouterr().err


@pytest.mark.parametrize("upstream", ["resolver.example", "127.0.0.1:0"])
def test_an_upstream_that_is_no_address_and_port_is_refused(upstream, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--upstream", upstream])
    assert exit_.value.code == 2
    assert f"argument --upstream: {upstream!r}: expected an IP address" in capsys.readouterr().err


def test_upstreams_are_addresses_or_none():
    assert parse_args(
        ["--upstream", "192.0.2.53", "--upstream", "[2001:db8::53]:5353"]
    ).upstream == [
        ("192.0.2.53", 53),
        ("2001:db8::53", 5353),
    ]
    assert parse_args(["--upstream", "none"]).upstream == [None]
