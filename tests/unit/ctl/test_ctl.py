"""netplugctl against a real SQLite store in a temp dir (no root needed)."""

import argparse
import io
import json
import subprocess
import sys
from ipaddress import ip_network

import pytest

from netplug.ctl import install
from netplug.ctl.main import (
    bad_records,
    carried,
    command_parsers,
    enforcement_failing,
    main,
    parser,
)
from netplug.ctl.tables import render
from netplug.ipam import inventory
from netplug.ipam.allocations import IPAM, Pool
from netplug.ipam.store.sqlite import SQLiteStore

V4 = Pool(ip_network("10.244.0.0/16"), 24)


@pytest.fixture
def store_url(tmp_path):
    url = f"sqlite://{tmp_path}/netplug.db"
    store = SQLiteStore(f"{tmp_path}/netplug.db")
    try:
        IPAM(store, "node-1").allocate("blue", [V4], "c1", "eth0", names=("web",))
        IPAM(store, "node-1").allocate("blue", [V4], "c2", "eth0", netns=f"{tmp_path}/gone")
        IPAM(store, "node-2").allocate("red", [V4], "c3", "eth0")
        yield url
    finally:
        store.close()


def test_render_table_and_json():
    rows = [{"a": "x", "bb": 10}, {"a": "longer", "bb": 2}]
    out = io.StringIO()
    render(rows, ["a", "bb"], as_json=False, out=out)
    assert out.getvalue().splitlines() == ["A       BB", "x       10", "longer  2"]
    out = io.StringIO()
    render(rows, ["a", "bb"], as_json=True, out=out)
    assert json.loads(out.getvalue()) == rows


def test_inventory_reads_blocks_and_attachments(store_url, tmp_path):
    store = SQLiteStore(f"{tmp_path}/netplug.db")
    try:
        blocks = inventory.blocks(store)
        assert {(b.network, b.host, b.used) for b in blocks} == {
            ("blue", "node-1", 2),
            ("red", "node-2", 1),
        }
        assert all(b.capacity == 253 for b in blocks)
        assert [a.container_id for a in inventory.attachments(store, "node-1")] == ["c1", "c2"]
    finally:
        store.close()


def test_blocks_and_allocations_as_json(store_url, capsys):
    assert main(["--store", store_url, "--json", "blocks", "--network", "blue"]) == 0
    (block,) = json.loads(capsys.readouterr().out)
    assert block["host"] == "node-1" and block["used"] == 2 and block["free"] == 251
    assert main(["--store", store_url, "--json", "allocations", "--host", "node-2"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["container"] == "c3" and row["network"] == "red"


def test_names_lists_registered_names(store_url, capsys):
    assert main(["--store", store_url, "--json", "names"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["name"] == "web" and row["source"] == "container"


def test_gc_releases_attachments_whose_namespace_is_gone(store_url, capsys):
    args = ["--store", store_url, "--host-name", "node-1", "--json", "gc"]
    assert main([*args, "--dry-run"]) == 0
    assert [r["container"] for r in json.loads(capsys.readouterr().out)] == ["c2"]
    assert main(args) == 0
    assert [r["container"] for r in json.loads(capsys.readouterr().out)] == ["c2"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out) == []  # c1 has no recorded netns: kept


def test_gc_keeps_an_attachment_whose_namespace_lives(store_url, tmp_path, capsys):
    """No interface yet in a living namespace is what an ADD in progress looks like."""
    store = SQLiteStore(f"{tmp_path}/netplug.db")
    try:
        ipam = IPAM(store, "node-1")
        ipam.allocate("blue", [V4], "c4", "eth9", netns="/proc/self/ns/net")
        assert main(["--store", store_url, "--host-name", "node-1", "--json", "gc"]) == 0
        assert [r["container"] for r in json.loads(capsys.readouterr().out)] == ["c2"]
        assert ipam.lookup("blue", "c4", "eth9") is not None
    finally:
        store.close()


def test_bad_store_url_is_a_clear_error(capsys):
    assert main(["--store", "foo://x", "status"]) == 2
    assert "unknown scheme" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv", [["status"], ["blocks", "--json"], ["names"], ["hosts"], ["policy", "list"], ["gc"]]
)
def test_a_sqlite_store_that_does_not_exist_is_an_error_not_an_empty_one(argv, tmp_path, capsys):
    """A mistyped --store (or $NETPLUG_STORE) read as an empty cluster, with the
    file and its directory created on the way, told the operator nothing was there."""
    path = tmp_path / "typo" / "netplug.db"
    assert main(["--store", f"sqlite://{path}", *argv]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert f"store sqlite://{path} does not exist" in err and "--store" in err
    assert not path.parent.exists()


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["--host-name", "h1/evil", "status"], "--host-name"),
        (["allocations", "--host", "h1/evil"], "--host"),
        (["hosts", "remove", "h1/evil"], "NAME"),
        (["blocks", "--network", "a/b"], "--network"),
        (["install", "--network", "a/b"], "--network"),
        (["install", "--host-name-conf", ".."], "--host-name-conf"),
    ],
)
def test_names_that_go_into_store_keys_are_refused(argv, option, store_url, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--store", store_url, *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}:" in err and "is not a valid" in err and "starting with" in err


def test_an_invalid_netplug_hostname_is_refused(store_url, monkeypatch, capsys):
    monkeypatch.setenv("NETPLUG_HOSTNAME", "h1/evil")
    with pytest.raises(SystemExit):
        main(["--store", store_url, "hosts"])
    assert "'h1/evil' is not a valid host name" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "field"),
    [
        (["--subnet", "bogus"], "subnet"),
        (["--subnet", "10.9.0.1/16"], "subnet"),  # host bits set
        (["--subnet", "fd00::/48"], "subnet"),  # IPv6 goes in subnet6
        (["--cni-version", "9.9.9"], "cniVersion"),
        (["--store", "sqlite://relative.db"], "store"),
    ],
)
def test_install_refuses_a_conflist_the_plugin_would_refuse(option, field, tmp_path, capsys):
    """The conflist was written whatever the options said: the mistake showed at
    every container start (CNI error 7 or 1), on every host it was copied to."""
    bin_dir, conf_dir = tmp_path / "bin", tmp_path / "conf"
    argv = ["install", "--bin-dir", str(bin_dir), "--conf-dir", str(conf_dir), *option]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("netplugctl: install: ") and field in err and "nothing written" in err
    assert not bin_dir.exists() and not conf_dir.exists()


def test_install_writes_launchers_and_a_conflist(tmp_path):
    bin_dir, conf_dir = tmp_path / "bin", tmp_path / "conf"
    assert (
        main(
            [
                "--json",
                "install",
                "--bin-dir",
                str(bin_dir),
                "--conf-dir",
                str(conf_dir),
                "--network",
                "blue",
                "--subnet",
                "10.9.0.0/16",
            ]
        )
        == 0
    )
    conflist = json.loads((conf_dir / "50-blue.conflist").read_text())
    assert conflist["plugins"] == [
        {  # no vxlan.vni: the store assigns the network one
            "type": "netplug",
            "subnet": "10.9.0.0/16",
            "ipMasq": True,  # outside access, as on podman's default network
            "store": "sqlite:///var/lib/netplug/netplug.db",
            "agent": {"autostart": True},  # the first ADD starts netplugd
            "capabilities": {"aliases": True, "ips": True},
        },
        {"type": "portmap", "capabilities": {"portMappings": True}},  # podman's -p
    ]
    for name in install.PLUGINS:
        done = subprocess.run(
            [bin_dir / name],
            input=b'{"cniVersion": "1.0.0"}',
            env={"CNI_COMMAND": "VERSION"},
            capture_output=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["cniVersion"] == "1.0.0"
    assert (bin_dir / "netplug").read_text().startswith(f"#!{sys.executable} -I")


def test_hosts_lists_and_removes_a_dead_host(store_url, tmp_path, capsys):
    assert main(["--store", store_url, "--json", "hosts"]) == 0
    rows = {r["host"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["node-2"]["blocks"].startswith("red:") and rows["node-2"]["state"] == "gone"
    assert main(["--store", store_url, "hosts", "remove", "node-2"]) == 0
    store = SQLiteStore(f"{tmp_path}/netplug.db")
    try:
        assert {b.host for b in inventory.blocks(store)} == {"node-1"}
        assert inventory.attachments(store, "node-2") == []
    finally:
        store.close()


def test_removing_a_host_the_store_does_not_know_is_an_error(store_url, capsys):
    """A mistyped name released nothing and said so on stderr only, exit status 0:
    a script (or an operator) took the dead host for removed."""
    assert main(["--store", store_url, "hosts", "remove", "node-9"]) == 1
    err = capsys.readouterr().err
    assert "no host node-9" in err and "node-1, node-2" in err
    assert main(["--store", store_url, "hosts", "remove", "node-2"]) == 0
    assert main(["--store", store_url, "hosts", "remove", "node-2"]) == 1  # gone now


def test_hosts_remove_with_json_prints_json(store_url, capsys):
    """Scripts read --json's stdout: remove printed nothing there, only stderr."""
    assert main(["--store", store_url, "hosts", "remove", "node-2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"host": "node-2", "released": 3}]


def test_removing_a_live_host_needs_force(store_url, tmp_path, capsys):
    store = SQLiteStore(f"{tmp_path}/netplug.db")
    try:
        lease = store.grant(30)
        store.put("/netplug/hosts/node-2", b'{"vtep": "192.0.2.12"}', lease)
        assert main(["--store", store_url, "hosts", "remove", "node-2"]) == 1
        assert "is live" in capsys.readouterr().err
        assert main(["--store", store_url, "hosts", "remove", "node-2", "--force"]) == 0
        assert store.get("/netplug/hosts/node-2") is None
    finally:
        store.close()


def test_names_include_api_registrations(store_url, tmp_path, capsys):
    """An API name has no network and no host: null in JSON, where the table says
    "-" (the "-" leaked into --json once, a string scripts had to know)."""
    store = SQLiteStore(f"{tmp_path}/netplug.db")
    try:
        store.put("/netplug/dns/api", b'{"addresses": ["10.1.2.3"]}')
    finally:
        store.close()
    assert main(["--store", store_url, "--json", "names"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["api"]["source"] == "api" and rows["api"]["addresses"] == "10.1.2.3"
    assert (rows["api"]["network"], rows["api"]["host"]) == (None, None)
    assert rows["web"]["source"] == "container"


def test_json_says_null_where_the_table_says_dash(store_url, capsys):
    """A gone host's VTEP and since: null in JSON, "-" in the table."""
    assert main(["--store", store_url, "--json", "hosts"]) == 0
    gone = next(r for r in json.loads(capsys.readouterr().out) if r["host"] == "node-2")
    assert (gone["vtep"], gone["since"]) == (None, None)
    assert main(["--store", store_url, "hosts"]) == 0
    assert capsys.readouterr().out.splitlines()[2].split()[1:4] == ["-", "gone", "-"]


def test_names_skip_an_unreadable_registration_with_a_warning(store_url, tmp_path, capsys):
    """Read with the DNS record codec, as the DNS server does: one broken record is
    named on stderr and skipped, not a traceback that hides every other name."""
    store = SQLiteStore(f"{tmp_path}/netplug.db")
    try:
        store.put("/netplug/dns/api", b'{"addresses": ["10.1.2.3"]}')
        store.put("/netplug/dns/broken", b"not json")
        store.put("/netplug/dns/odd", b'{"addresses": ["10.1.2.4"], "color": "red"}')
    finally:
        store.close()
    assert main(["--store", store_url, "--json", "names"]) == 0
    out, err = capsys.readouterr()
    assert {r["name"] for r in json.loads(out) if r["source"] == "api"} == {"api"}
    assert "skipping unreadable /netplug/dns/broken" in err
    assert "skipping unreadable /netplug/dns/odd: unknown field 'color'" in err


def test_allocations_json_after_the_command(store_url, capsys):
    assert main(["allocations", "--json", "--store", store_url, "--host", "node-2"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["container"] == "c3"


def _positionals(sp: argparse.ArgumentParser) -> list[str]:
    """A value for each positional argument of a command (hosts remove NAME)."""
    return [
        "x"
        for action in sp._actions
        if not action.option_strings and not isinstance(action, argparse._SubParsersAction)
    ]


@pytest.mark.parametrize("command", sorted(command_parsers(parser())))
def test_global_options_work_before_and_after_every_command(command):
    sp = command_parsers(parser())[command]
    words = [*command.split(), *_positionals(sp)]
    options = ["--json", "--store", "etcd://192.0.2.1:2379", "--host-name", "node-7"]
    for argv in ([*options, *words], [*words, *options]):
        args = parser().parse_args(argv)
        assert (args.json, args.store, args.host_name) == (True, options[2], options[4]), argv
    defaults = parser().parse_args(words)
    assert defaults.json is False and defaults.store and defaults.host_name


def test_install_takes_a_vni_or_leaves_portmap_masquerading_and_autostart_out(tmp_path, capsys):
    dirs = ["--bin-dir", str(tmp_path / "bin"), "--conf-dir", str(tmp_path / "conf")]
    args = ["--network", "red", "--vni", "7", "--no-portmap", "--no-ip-masq", "--no-autostart"]
    assert main(["install", *dirs, *args]) == 0
    (plugin,) = json.loads((tmp_path / "conf" / "50-red.conflist").read_text())["plugins"]
    assert plugin["vxlan"] == {"vni": 7}
    assert plugin["ipMasq"] is False
    assert plugin["agent"] == {"autostart": False}  # a host that runs the systemd unit
    for bad in ("0", "16777216", "x"):
        with pytest.raises(SystemExit):
            main(["install", *dirs, "--network", "green", "--vni", bad])
        assert "--vni: expected an integer from 1 to 16777215" in capsys.readouterr().err
    assert not (tmp_path / "conf" / "50-green.conflist").exists()


def test_install_warns_when_portmap_is_not_beside_netplug(tmp_path, capsys):
    dirs = ["--bin-dir", str(tmp_path / "bin"), "--conf-dir", str(tmp_path / "conf")]
    assert main(["install", *dirs]) == 0
    assert "the chain runs portmap, which is not in" in capsys.readouterr().err
    (tmp_path / "bin" / "portmap").touch()
    assert main(["install", *dirs]) == 0
    assert capsys.readouterr().err == ""


def test_status_text_names_a_failing_enforcer_and_the_bad_records():
    """The agent's health as ``status`` prints it (JSON has it whole)."""
    bad = {"part": "overlay", "key": "/netplug/vteps/b/x", "error": "MalformedRecord: no"}
    health = {
        "enforcement": {"state": "failing", "failingFor": 3.5, "failures": 4, "error": "refused"},
        "badRecords": [bad],
    }
    assert enforcement_failing(health) == [
        "policy enforcement failing for 3.5 s (4 attempts): refused"
    ]
    assert bad_records(health) == [
        "bad record /netplug/vteps/b/x (skipped by overlay): MalformedRecord: no"
    ]
    assert enforcement_failing({"enforcement": {"state": "ok", "revision": 3}}) == []
    assert enforcement_failing(None) == [] == bad_records(None)


def test_status_text_names_the_records_carried_for_hosts_not_recovered():
    health = {"carried": {"host2": 3, "host3": 1}, "carriedFor": 597}
    assert carried(health) == [
        "store reset: keeping the records of hosts not recovered yet (host2: 3 record(s), "
        "host3: 1 record(s)) for 597 s more: run `netplugctl recover` on them"
    ]
    assert carried({"store": "up"}) == [] == carried(None)
