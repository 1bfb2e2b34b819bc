"""The CNI spec's MUST list (cni-checklist.md 1.12), against the real executable,
for every cniVersion netplug fully supports, with and without the agent."""

from __future__ import annotations

import json

import pytest

from netplug_env import container_addresses, ping
from runtimes import run

pytestmark = pytest.mark.netns

VERSIONS = ["0.3.1", "0.4.0", "1.0.0", "1.1.0"]


@pytest.mark.parametrize("version", VERSIONS)
def test_add_returns_the_result_in_the_requested_version(netplug_host, containers, version):
    conf = netplug_host.conf(version)
    ctr = containers()
    result = netplug_host.add(conf, "c1", ctr)
    assert result["cniVersion"] == version
    bridge, host_end, ctr_end = result["interfaces"]
    assert bridge["name"] == "np-blue"
    assert host_end["name"] in netplug_host.veths()
    assert ctr_end["name"] == "eth0" and ctr_end["sandbox"].endswith(ctr)
    (ip,) = result["ips"]
    assert ip["interface"] == 2
    assert ("version" in ip) == (version < "1.0.0")  # 0.3.x/0.4.0 carry ips[].version
    assert container_addresses(ctr) == [ip["address"]]
    assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": ip["gateway"]}]
    assert result["dns"] == {"nameservers": [ip["gateway"]], "search": ["blue.netplug.internal"]}


def test_two_containers_reach_each_other_and_the_gateway(netplug_host, containers):
    conf = netplug_host.conf()
    a, b = containers(), containers()
    ip_a = netplug_host.add(conf, "a", a)["ips"][0]
    ip_b = netplug_host.add(conf, "b", b)["ips"][0]
    assert ip_a["address"] != ip_b["address"]
    assert ping(a, ip_b["address"].split("/")[0])
    assert ping(b, ip_a["gateway"])


def test_add_fails_when_the_interface_exists_and_changes_nothing(netplug_host, containers):
    conf = netplug_host.conf()
    ctr = containers()
    netplug_host.add(conf, "c1", ctr)
    before = (netplug_host.veths(), netplug_host.records())
    done = netplug_host.call("ADD", conf, container_id="c2", netns=ctr)
    assert done.status != 0 and done.code == 102
    assert "already exists" in done.out["msg"]
    assert (netplug_host.veths(), netplug_host.records()) == before


@pytest.mark.parametrize("version", VERSIONS)
def test_del_is_idempotent(netplug_host, containers, version):
    conf = netplug_host.conf(version)
    ctr = containers()
    netplug_host.add(conf, "c1", ctr)
    netplug_host.delete(conf, "c1", ctr)
    netplug_host.delete(conf, "c1", ctr)
    assert netplug_host.veths() == set()
    assert netplug_host.records("/netplug/attachments/") == {}
    assert container_addresses_or_none(ctr) is None


def container_addresses_or_none(netns: str):
    done = run(["ip", "-n", netns, "link", "show", "eth0"], check=False)
    return None if done.returncode else done.stdout


def test_del_without_netns_or_prev_result_releases(netplug_host, containers):
    conf = netplug_host.conf()
    ctr = containers()
    netplug_host.add(conf, "c1", ctr)
    netplug_host.delete(conf, "c1", None)  # CNI_NETNS is optional for DEL
    assert netplug_host.veths() == set()
    assert netplug_host.records("/netplug/attachments/") == {}


def test_del_after_the_namespace_is_gone(netplug_host, containers):
    conf = netplug_host.conf()
    ctr = containers()
    netplug_host.add(conf, "c1", ctr)
    run(["ip", "netns", "del", ctr])
    netplug_host.delete(conf, "c1", ctr)
    assert netplug_host.records("/netplug/attachments/") == {}
    assert netplug_host.veths() == set()


def test_del_of_something_never_added_succeeds(netplug_host, containers):
    netplug_host.delete(netplug_host.conf(), "never", containers())


@pytest.mark.parametrize("version", ["0.4.0", "1.0.0", "1.1.0"])
def test_check_passes_then_finds_a_missing_address(netplug_host, containers, version):
    conf = netplug_host.conf(version)
    ctr = containers()
    result = netplug_host.add(conf, "c1", ctr)
    with_prev = dict(conf, prevResult=result)
    assert netplug_host.call("CHECK", with_prev, container_id="c1", netns=ctr).status == 0
    run(["ip", "-n", ctr, "addr", "flush", "dev", "eth0"])
    done = netplug_host.call("CHECK", with_prev, container_id="c1", netns=ctr)
    assert done.status != 0 and done.code == 103
    assert "missing" in done.out["msg"]


def test_check_is_refused_below_0_4_0(netplug_host, containers):
    conf = netplug_host.conf("0.3.1")
    ctr = containers()
    result = netplug_host.add(conf, "c1", ctr)
    done = netplug_host.call("CHECK", dict(conf, prevResult=result), container_id="c1", netns=ctr)
    assert done.code == 1


def test_version_needs_only_the_command(plain_host):
    done = plain_host.call("VERSION", stdin=b'{"cniVersion": "1.0.0"}', ifname=None)
    assert done.status == 0
    assert done.out == {
        "cniVersion": "1.0.0",
        "supportedVersions": ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"],
    }


def test_status_reports_ready_and_an_unusable_store(netplug_host, tmp_path):
    assert netplug_host.call("STATUS", netplug_host.conf("1.1.0"), ifname=None).status == 0
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    bad = netplug_host.conf("1.1.0", store=f"sqlite://{blocker}/netplug.db")
    done = netplug_host.call("STATUS", bad, ifname=None)
    assert done.code in (11, 50)
    assert str(blocker) in done.out["msg"]


def test_status_and_gc_need_1_1_0(netplug_host):
    for command in ("STATUS", "GC"):
        assert netplug_host.call(command, netplug_host.conf("1.0.0"), ifname=None).code == 1


def test_gc_releases_what_is_not_in_the_valid_list(netplug_host, containers):
    conf = netplug_host.conf("1.1.0")
    keep, drop = containers(), containers()
    kept = netplug_host.add(conf, "keep", keep)
    netplug_host.add(conf, "drop", drop)
    valid = dict(conf, **{"cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]})
    done = netplug_host.call("GC", valid, ifname=None)
    assert done.status == 0 and done.stdout == ""
    attachments = netplug_host.records("/netplug/attachments/")
    assert [r["containerID"] for r in attachments.values()] == ["keep"]
    assert netplug_host.veths() == {kept["interfaces"][1]["name"]}


def test_gc_with_an_empty_list_releases_everything(netplug_host, containers):
    conf = netplug_host.conf("1.1.0")
    netplug_host.add(conf, "c1", containers())
    done = netplug_host.call("GC", dict(conf, **{"cni.dev/valid-attachments": []}), ifname=None)
    assert done.status == 0
    assert netplug_host.records("/netplug/attachments/") == {}
    assert netplug_host.veths() == set()


def test_ip_masq_table_lives_as_long_as_the_networks_containers(netplug_host, containers):
    conf = netplug_host.conf(ipMasq=True)
    a, b = containers(), containers()
    netplug_host.add(conf, "a", a)
    netplug_host.add(conf, "b", b)
    assert "netplug-blue" in netplug_host.nft_tables()
    netplug_host.delete(conf, "a", a)
    assert "netplug-blue" in netplug_host.nft_tables()
    netplug_host.delete(conf, "b", b)
    assert "netplug-blue" not in netplug_host.nft_tables()


def test_dual_stack(netplug_host, containers):
    conf = netplug_host.conf(subnet6="fd00:244::/48")
    a, b = containers(), containers()
    ips_a = netplug_host.add(conf, "a", a)["ips"]
    ips_b = netplug_host.add(conf, "b", b)["ips"]
    assert [ip["address"].count(":") > 0 for ip in ips_a] == [False, True]
    assert ping(a, ips_b[1]["address"].split("/")[0])
    assert ping(a, ips_b[0]["address"].split("/")[0])


@pytest.mark.parametrize(
    ("where", "address"),
    [
        ("args", "10.244.200.10"),
        ("runtimeConfig", "10.244.200.11/24"),
        ("CNI_ARGS", "10.244.200.12"),
    ],
)
def test_static_addresses(netplug_host, containers, where, address):
    conf = netplug_host.conf()
    env = {}
    if where == "args":
        conf["args"] = {"cni": {"ips": [address]}}
    elif where == "runtimeConfig":
        conf["runtimeConfig"] = {"ips": [address]}
    else:
        env["CNI_ARGS"] = f"IgnoreUnknown=1;IP={address}"
    result = netplug_host.add(conf, "c1", containers(), env=env)
    assert result["ips"][0]["address"] == address.split("/")[0] + "/24"


@pytest.mark.parametrize("where", ["args", "CNI_ARGS"])
def test_a_static_address_of_a_family_the_network_lacks_is_refused(netplug_host, containers, where):
    """An IPv6 address asked of an IPv4-only network is code 7 naming it, not an
    ADD that succeeds with some IPv4 address and drops the request unsaid."""
    conf, env = netplug_host.conf(), {}
    if where == "args":
        conf["args"] = {"cni": {"ips": ["fd00::5"]}}
    else:
        env["CNI_ARGS"] = "IgnoreUnknown=1;IP=fd00::5"
    done = netplug_host.call("ADD", conf, container_id="c1", netns=containers(), env=env)
    assert done.code == 7, done.stdout
    assert "fd00::5" in done.out["msg"] and "subnet6" in done.out["msg"]
    assert netplug_host.records("/netplug/attachments/") == {}
    assert netplug_host.veths() == set()


def test_names_are_recorded_with_the_attachment(netplug_host, containers):
    conf = netplug_host.conf(runtimeConfig={"aliases": {"blue": ["db", "not a label"]}})
    netplug_host.add(conf, "c1", containers(), env={"CNI_ARGS": "K8S_POD_NAME=web"})
    (record,) = netplug_host.records("/netplug/attachments/").values()
    assert record["names"] == ["web", "db"]


def test_plugin_log_has_one_line_per_call(netplug_host, containers):
    conf = netplug_host.conf()
    ctr = containers()
    netplug_host.add(conf, "c1", ctr)
    netplug_host.delete(conf, "c1", ctr)
    lines = netplug_host.log_file.read_text().splitlines()
    assert len(lines) == 2
    assert "ADD container=c1 ifname=eth0 network=blue ok" in lines[0]
    assert "DEL container=c1" in lines[1]


def test_results_are_valid_json_documents_only(netplug_host, containers):
    done = netplug_host.call("ADD", netplug_host.conf(), container_id="c1", netns=containers())
    json.loads(done.stdout)  # nothing but the result on stdout
