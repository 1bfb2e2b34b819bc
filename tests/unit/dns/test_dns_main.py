"""netplug-dns's options: values the server cannot answer with are refused at start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from netplug.dns.main import parse_args, parser
from netplug.dns.upstream import is_ours

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


@pytest.mark.parametrize(
    ("listen", "upstream"),
    [
        ("127.0.0.1:5353", "127.0.0.1:5353"),
        ("0.0.0.0:5353", "127.0.0.1:5353"),  # a wildcard listener holds loopback too
        ("[::]:5353", "[::1]:5353"),
    ],
)
def test_an_upstream_that_is_our_own_listener_is_refused(listen, upstream, capsys) -> None:
    """Forwarding to ourselves looped: each query for another name was forwarded
    to us again, 1024 times over (until the forwards in flight ran out), then
    SERVFAIL. resolv.conf's servers were already checked; --upstream was not."""
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--listen", listen, "--upstream", upstream])
    assert exit_.value.code == 2
    assert f"--upstream {upstream} is this server's own --listen" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("ours", "server", "loops"),
    [
        (("127.0.0.1", 53), ("127.0.0.1", 53), True),
        (("0.0.0.0", 53), ("127.0.0.2", 53), True),
        (("::", 53), ("::1", 53), True),
        (("0.0.0.0", 53), ("::1", 53), False),  # another family
        (("127.0.0.1", 53), ("127.0.0.1", 5353), False),
        (("10.0.0.1", 53), ("10.0.0.2", 53), False),
        (("0.0.0.0", 53), ("192.0.2.53", 53), False),  # not known to be ours
        (("127.0.0.1", 53), ("resolver.example", 53), False),  # a name: never ours
    ],
)
def test_which_upstreams_are_our_own_listeners(ours, server, loops) -> None:
    assert is_ours(server, [ours]) is loops


@pytest.mark.parametrize(
    "upstream", ["resolver.example", "dns.google:53", "127.0.0.1:0", "[::1]:0"]
)
def test_an_upstream_that_is_no_address_and_port_is_refused(upstream, capsys) -> None:
    """A name was taken as is: each forwarded query then looked it up through the
    system resolver first (which may be this very server); port 0 reaches nobody."""
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--listen", "127.0.0.1:5353", "--upstream", upstream])
    assert exit_.value.code == 2
    assert f"argument --upstream: {upstream!r}: expected an IP address" in capsys.readouterr().err
