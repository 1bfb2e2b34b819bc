"""netplugd's options: a host name goes into store keys, so it is checked."""

import pytest

from netplug.agent.daemon import parse_args


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
