"""dispatch.handle with plain-function commands and a real SQLite-backed Host."""

import json

import pytest

from netplug.cni.dispatch import Plugin, handle
from netplug.cni.errors import CNIError
from netplug.cni.result import IPConfig, Result
from netplug.host import Host
from netplug.ipam.allocations import PoolExhausted
from netplug.ipam.store.base import StoreUnavailable
from netplug.locks import LockTimeout


@pytest.fixture
def host(tmp_path):
    h = Host.open("node-1", f"sqlite://{tmp_path}/netplug.db")
    try:
        yield h
    finally:
        h.close()


def conf(tmp_path, version="1.0.0", **extra):
    document = {
        "cniVersion": version,
        "name": "blue",
        "type": "netplug",
        "subnet": "10.244.0.0/16",
        "store": f"sqlite://{tmp_path}/netplug.db",
        "hostName": "node-1",
        "logFile": f"{tmp_path}/log",
        "runDir": f"{tmp_path}/run",
        **extra,
    }
    return json.dumps(document).encode()


ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "c1",
    "CNI_NETNS": "/run/netns/x",
    "CNI_IFNAME": "eth0",
}


def run(command_impl, tmp_path, host, env=ENV, **extra):
    plugin = Plugin({"ADD": command_impl, "DEL": command_impl})
    return handle(plugin, env, conf(tmp_path, **extra), lambda c: host)


def test_result_is_printed_in_the_requested_version(tmp_path, host):
    from ipaddress import ip_address, ip_interface

    result = Result(ips=(IPConfig(ip_interface("10.244.1.2/24"), ip_address("10.244.1.1")),))
    reply = run(lambda req, h: result, tmp_path, host, version="0.4.0")
    assert reply.exit_code == 0
    assert json.loads(reply.stdout)["ips"][0]["version"] == "4"
    assert reply.summary.startswith("ADD container=c1 ifname=eth0 network=blue ok (")
    assert reply.log_file == f"{tmp_path}/log"


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (CNIError(7, "bad field"), 7),
        (StoreUnavailable("db locked"), 11),
        (LockTimeout("lock held"), 11),
        (PoolExhausted("no block"), 100),
        (OSError(5, "I/O error"), 999),
        (RuntimeError("a bug"), 999),
    ],
)
def test_errors_become_one_json_document_with_the_right_code(tmp_path, host, error, code):
    def failing(req, h):
        raise error

    reply = run(failing, tmp_path, host)
    assert reply.exit_code == 1
    document = json.loads(reply.stdout)
    assert document["code"] == code and document["cniVersion"] == "1.0.0"
    assert f"error {code}" in reply.summary


def test_declined_when_the_host_is_not_ours(tmp_path, host):
    plugin = Plugin({"ADD": lambda req, h: pytest.fail("must not run")})
    reply = handle(plugin, ENV, conf(tmp_path), lambda c: None)
    assert reply.declined and reply.stdout == b""


def test_unparseable_input_needs_no_host(tmp_path):
    plugin = Plugin({"ADD": lambda req, h: pytest.fail("must not run")})
    reply = handle(plugin, ENV, b"{not json", lambda c: pytest.fail("must not open a host"))
    assert reply.exit_code == 1 and json.loads(reply.stdout)["code"] == 6


def test_version_needs_no_host():
    reply = handle(Plugin({}), {"CNI_COMMAND": "VERSION"}, b'{"cniVersion": "0.4.0"}', None)
    assert json.loads(reply.stdout)["cniVersion"] == "0.4.0"


def test_a_store_reset_under_the_host_is_refused_before_the_command_runs(tmp_path, host):
    ran = []
    assert run(lambda req, h: ran.append(req.command), tmp_path, host).exit_code == 0
    host.store.delete("/netplug/", prefix=True)  # the store was emptied
    for command in ("ADD", "DEL", "STATUS"):
        plugin = Plugin({command: lambda req, h: ran.append(req.command)})
        stdin = conf(tmp_path, version="1.1.0")  # STATUS is 1.1.0's
        reply = handle(plugin, {**ENV, "CNI_COMMAND": command}, stdin, lambda c: host)
        error = json.loads(reply.stdout)
        assert error["code"] == (50 if command == "STATUS" else 104)
        assert "netplugctl" in error["msg"] and "recover" in error["msg"]
    assert ran == ["ADD"]
    assert host.store.range("/netplug/", prefix=True).kvs == []


def test_a_corrupt_store_is_its_own_code(tmp_path, host):
    from netplug.ipam.store.base import StoreCorrupt

    def corrupt(req, h):
        raise StoreCorrupt("damaged")

    error = json.loads(run(corrupt, tmp_path, host).stdout)
    assert error["code"] == 105 and "damaged" in error["msg"]


def test_an_unexpected_error_outside_the_commands_is_code_999_with_its_traceback(
    tmp_path, host, caplog
):
    """parse_request raises CNIError only; should a bug break that, the runtime still
    gets one error object, and the log the traceback (STYLE: anything else is 999)."""

    def broken_parser(raw, env):
        raise RecursionError("maximum recursion depth exceeded")

    plugin = Plugin({"ADD": lambda req, h: None}, conf_parser=broken_parser)
    reply = handle(plugin, ENV, conf(tmp_path), lambda c: host)
    assert reply.exit_code == 1
    error = json.loads(reply.stdout)
    assert error["code"] == 999 and "RecursionError" in error["msg"]
    assert any(r.exc_info and r.exc_info[0] is RecursionError for r in caplog.records)
