"""netplug-dns's options: values the server cannot answer with are refused at start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from netplug.dns.main import parser

BIN = Path(sys.executable).parent / "netplug-dns"


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["--ttl", "-1"], "--ttl"),  # every answer in the zone failed to pack, and was dropped
        (["--ttl", "4294967296"], "--ttl"),
        (["--ttl", "five"], "--ttl"),
        (["--upstream-timeout", "0"], "--upstream-timeout"),  # every forward was SERVFAIL
        (["--upstream-timeout", "-2"], "--upstream-timeout"),
        (["--upstream-timeout", "nan"], "--upstream-timeout"),
    ],
)
def test_a_ttl_or_timeout_the_server_cannot_use_is_refused(argv, option, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        parser().parse_args(["--listen", "127.0.0.1:0", *argv])
    assert exit_.value.code == 2
    assert f"argument {option}: {argv[1]!r}: expected" in capsys.readouterr().err


def test_the_limits_themselves_are_fine() -> None:
    args = parser().parse_args(["--listen", "127.0.0.1:0", "--ttl", "0"])
    assert (args.ttl, args.upstream_timeout) == (0, 2.0)
    args = parser().parse_args(
        ["--listen", "127.0.0.1:0", "--ttl", "2147483647", "--upstream-timeout", "0.5"]
    )
    assert (args.ttl, args.upstream_timeout) == (2147483647, 0.5)


def test_a_listen_address_this_host_does_not_have_is_an_error(tmp_path) -> None:
    """It used to start and say "ready", listening where no query could arrive."""
    argv = [str(BIN), "--store", f"sqlite://{tmp_path}/netplug.db", "--upstream", "127.0.0.1:9"]
    argv += ["--listen", "127.0.0.1:0", "--listen", "192.0.2.77:0"]  # TEST-NET-1: nowhere here
    done = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    assert done.returncode == 1
    assert "cannot listen on 192.0.2.77:0: Cannot assign requested address" in done.stderr
