"""parse_netconf / parse_ipam_conf: the decoded config + environment -> NetConf, or CNIError."""

import hashlib
import os
from ipaddress import ip_address, ip_interface, ip_network

import pytest

from netplug.cni.errors import CNIError
from netplug.cni.netconf import (
    NetConf,
    VxlanConf,
    parse_cni_args,
    parse_ipam_conf,
    parse_netconf,
)

ENV = {"NETPLUG_HOSTNAME": "node-1"}
CONF = {"cniVersion": "1.1.0", "name": "blue", "type": "netplug", "subnet": "10.244.0.0/16"}
DROP = object()  # an override value that removes the key


def _merge(base: dict, over: dict) -> dict:
    merged = {**base, **over}
    return {k: v for k, v in merged.items() if v is not DROP}


def conf_of(conf: dict | None = None, env: dict | None = None) -> NetConf:
    """parse_netconf with CONF/ENV updated by `conf`/`env` (DROP removes a key)."""
    return parse_netconf(_merge(CONF, conf or {}), _merge(ENV, env or {}))


def failure(conf: dict | None = None, env: dict | None = None) -> CNIError:
    """The CNIError that parsing raises."""
    with pytest.raises(CNIError) as e:
        conf_of(conf, env)
    return e.value


# --- the happy path and defaults -------------------------------------------------------


def test_design_example_parses() -> None:
    conf = conf_of(
        {
            "subnet6": "fd00:244::/48",
            "hostBlockPrefix": 26,
            "hostBlockPrefix6": 80,
            "vxlan": {"vni": 7, "port": 8472, "device": "eth1"},
            "mtu": 1400,
            "ipMasq": True,
            "store": "etcd://10.0.0.1:2379,10.0.0.2:2379",
            "hostName": "node-9",
            "dns": {"domain": "Cluster.Test."},
            "bridge": "br-blue",
            "logFile": "/tmp/np.log",
            "runDir": "/tmp/np-run",
            "capabilities": {"aliases": True, "ips": True},  # unknown keys pass through
            "someFutureKey": [1, 2],
        }
    )
    assert conf.subnet6 == ip_network("fd00:244::/48")
    assert (conf.host_block_prefix, conf.host_block_prefix6) == (26, 80)
    assert conf.vxlan == VxlanConf(vni=7, port=8472, device="eth1")
    assert (conf.mtu, conf.ip_masq, conf.host_name) == (1400, True, "node-9")
    assert conf.store == "etcd://10.0.0.1:2379,10.0.0.2:2379"
    assert conf.domain == "cluster.test"  # DNS names are case-insensitive; root dot dropped
    assert (conf.bridge, conf.log_file, conf.run_dir) == ("br-blue", "/tmp/np.log", "/tmp/np-run")


def test_isolate_defaults_to_true_and_can_be_turned_off() -> None:
    assert conf_of({}).isolate is True
    assert conf_of({"isolate": False}).isolate is False


def test_agent_autostart_defaults_to_true_and_can_be_turned_off() -> None:
    assert conf_of({}).autostart_agent is True
    assert conf_of({"agent": {}}).autostart_agent is True
    assert conf_of({"agent": {"autostart": False}}).autostart_agent is False
    assert failure({"agent": {"autostart": "no"}}).msg.startswith("agent.autostart")
    assert failure({"agent": False}).code == 7


def test_null_fields_mean_default() -> None:
    conf = conf_of({"mtu": None, "vxlan": None, "subnet6": None, "store": None})
    assert (conf.mtu, conf.vxlan, conf.subnet6, conf.store) == (0, VxlanConf(), None, NetConf.store)


@pytest.mark.parametrize(
    ("conf", "env", "expected"),
    [
        ({}, {}, "node-1"),
        ({"hostName": "cfg-host"}, {}, "cfg-host"),
        ({}, {"NETPLUG_HOSTNAME": DROP}, os.uname().nodename),
        ({}, {"NETPLUG_HOSTNAME": ""}, os.uname().nodename),
    ],
)
def test_host_name_precedence(conf: dict, env: dict, expected: str) -> None:
    assert conf_of(conf, env).host_name == expected


@pytest.mark.parametrize(
    "name", ["node-1", "node-1.example.com", "Node_1", "1", "a" * 64, "a" * 253, "x..y"]
)
def test_host_names_a_machine_may_have_are_valid(name: str) -> None:
    assert conf_of({"hostName": name}).host_name == name


def test_an_invalid_machine_hostname_is_named_as_such(monkeypatch) -> None:
    uname = os.uname()
    fake = os.uname_result((*uname[:1], "bad/name", *uname[2:]))
    monkeypatch.setattr(os, "uname", lambda: fake)
    e = failure({}, {"NETPLUG_HOSTNAME": DROP})
    assert e.code == 7
    assert "hostName (this machine's hostname)" in e.msg and '"bad/name"' in e.msg


@pytest.mark.parametrize(
    ("name", "bridge"),
    [
        ("blue", "np-blue"),
        ("twelve-chars", "np-twelve-chars"),  # exactly 15 bytes
        ("thirteen-char", "np-" + hashlib.sha1(b"thirteen-char").hexdigest()[:12]),
    ],
)
def test_default_bridge_from_network_name(name: str, bridge: str) -> None:
    assert conf_of({"name": name}).bridge == bridge


def test_netconf_built_directly_derives_its_bridge() -> None:
    conf = NetConf(cni_version="1.0.0", name="red", subnet=ip_network("10.0.0.0/8"), host_name="h")
    assert conf.bridge == "np-red"


def test_prev_result_and_raw_are_kept_as_given() -> None:
    prev = {"cniVersion": "1.0.0", "ips": [{"address": "10.244.1.2/24"}]}
    conf = conf_of({"prevResult": prev})
    assert conf.prev_result == prev
    assert conf.raw["prevResult"] == prev


# --- CNI_ARGS ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ("A=1;B=2", {"A": "1", "B": "2"}),
        (";;A=1; ;", {"A": "1"}),
        ("A=", {"A": ""}),
        ("A=b=c", {"A": "b=c"}),
        ("A=1;A=2", {"A": "2"}),
    ],
)
def test_parse_cni_args_is_lenient(text: str, expected: dict) -> None:
    assert parse_cni_args(text) == expected


# --- network config errors -------------------------------------------------------------

V6 = {"subnet6": "fd00:244::/48"}
BAD_CONFIGS = [
    # (config overrides, env overrides, fragments the message must contain)
    ({"name": DROP}, {}, ["name is missing"]),
    ({"name": 5}, {}, ["name", "a string", "5"]),
    ({"name": "bad/name"}, {}, ["name", '"bad/name"']),
    ({"name": "-dash"}, {}, ["name", '"-dash"']),
    ({"type": 5}, {}, ["type", "a string"]),
    ({"subnet": DROP}, {}, ["subnet is missing", "10.244.0.0/16"]),
    ({"subnet": 10}, {}, ["subnet", "a string", "10"]),
    ({"subnet": "garbage"}, {}, ["subnet", '"garbage"', "CIDR"]),
    ({"subnet": "10.244.1.5/16"}, {}, ["subnet", "host bits", "did you mean 10.244.0.0/16?"]),
    ({"subnet": "fd00::/64"}, {}, ["subnet", '"fd00::/64"', "subnet6"]),
    ({"subnet": "10.0.0.0/31"}, {}, ["subnet", "/30 or shorter"]),
    ({"subnet6": "10.0.0.0/8"}, {}, ["subnet6", '"10.0.0.0/8"', "IPv6", '"subnet"']),
    ({"subnet6": "fd00::1/64"}, {}, ["subnet6", "did you mean fd00::/64?"]),
    ({"subnet6": "fd00::/127"}, {}, ["subnet6", "/126 or shorter"]),
    ({"hostBlockPrefix": 8}, {}, ["hostBlockPrefix", "16 to 30", "got 8"]),
    ({"hostBlockPrefix": 31}, {}, ["hostBlockPrefix", "got 31"]),
    ({"hostBlockPrefix": "24"}, {}, ["hostBlockPrefix", "an integer", '"24"']),
    ({"hostBlockPrefix": True}, {}, ["hostBlockPrefix", "an integer", "true"]),
    ({"subnet": "10.0.0.0/25"}, {}, ["hostBlockPrefix", "10.0.0.0/25", "got 24"]),
    ({**V6, "hostBlockPrefix6": 40}, {}, ["hostBlockPrefix6", "48 to 126", "got 40"]),
    ({**V6, "hostBlockPrefix6": 127}, {}, ["hostBlockPrefix6", "got 127"]),
    ({"vxlan": "x"}, {}, ["vxlan", "an object"]),
    ({"vxlan": {"vni": 0}}, {}, ["vxlan.vni", "1 to 16777215", "got 0"]),
    ({"vxlan": {"vni": 2**24}}, {}, ["vxlan.vni", "got 16777216"]),
    ({"vxlan": {"vni": "42"}}, {}, ["vxlan.vni", "an integer"]),
    ({"vxlan": {"port": 0}}, {}, ["vxlan.port", "1 to 65535"]),
    ({"vxlan": {"port": 65536}}, {}, ["vxlan.port", "got 65536"]),
    ({"vxlan": {"device": "a/b"}}, {}, ["vxlan.device", '"a/b"']),
    ({"vxlan": {"device": 1}}, {}, ["vxlan.device", "a string"]),
    ({"mtu": 100}, {}, ["mtu", "576", "got 100"]),
    ({"mtu": -1}, {}, ["mtu", "got -1"]),
    ({"mtu": 70000}, {}, ["mtu", "got 70000"]),
    ({"mtu": "1500"}, {}, ["mtu", "an integer"]),
    ({"ipMasq": "yes"}, {}, ["ipMasq", "true or false", '"yes"']),
    ({"isolate": "no"}, {}, ["isolate", "true or false", '"no"']),
    ({"isolate": 0}, {}, ["isolate", "true or false"]),
    ({"store": 5}, {}, ["store", "a string"]),
    ({"hostName": []}, {}, ["hostName", "a string"]),
    # hostName is a store key component: "/" would nest records under another host.
    ({"hostName": "h1/evil"}, {}, ["hostName", '"h1/evil"', "letters, digits"]),
    ({"hostName": ".."}, {}, ["hostName", '".."', "starting with a letter or digit"]),
    ({"hostName": "-x"}, {}, ["hostName", '"-x"']),
    ({"hostName": "node 1"}, {}, ["hostName", '"node 1"']),
    ({"hostName": "n\u00f6de"}, {}, ["hostName", "1 to 253"]),
    ({"hostName": "a" * 254}, {}, ["hostName", "1 to 253"]),
    ({"hostName": DROP}, {"NETPLUG_HOSTNAME": "h1/evil"}, ["hostName (from NETPLUG_HOSTNAME)"]),
    ({"bridge": "br\ud800"}, {}, ["bridge", "1 to 15 bytes of UTF-8"]),
    ({"bridge": "br\u0000"}, {}, ["bridge"]),
    ({"logFile": "/var/log/a\u0000b"}, {}, ["logFile", "absolute path"]),
    ({"runDir": "/run/\ud800"}, {}, ["runDir", "absolute path"]),
    ({"dns": "x"}, {}, ["dns", "an object"]),
    ({"dns": {"domain": "bad_domain"}}, {}, ["dns.domain", '"bad_domain"']),
    ({"dns": {"domain": "a..b"}}, {}, ["dns.domain"]),
    ({"dns": {"domain": "."}}, {}, ["dns.domain"]),
    ({"bridge": "much-too-long-bridge"}, {}, ["bridge", '"much-too-long-bridge"']),
    ({"logFile": "netplug.log"}, {}, ["logFile", "absolute path"]),
    ({"runDir": "run"}, {}, ["runDir", "absolute path"]),
    ({"runtimeConfig": []}, {}, ["runtimeConfig", "an object"]),
    ({"runtimeConfig": {"aliases": "web"}}, {}, ["runtimeConfig.aliases", "a list"]),
    ({"runtimeConfig": {"aliases": ["ok", 1]}}, {}, ["runtimeConfig.aliases[1]", "a string"]),
    ({"runtimeConfig": {"aliases": {"blue": "web"}}}, {}, ["runtimeConfig.aliases.blue"]),
    ({"runtimeConfig": {"ips": "10.244.1.5"}}, {}, ["runtimeConfig.ips", "a list"]),
    ({"runtimeConfig": {"ips": ["nope"]}}, {}, ["runtimeConfig.ips[0]", '"nope"']),
    ({"runtimeConfig": {"ips": ["10.244.1.5/33"]}}, {}, ["runtimeConfig.ips[0]", "/33"]),
    ({"args": {"cni": {"ips": [5]}}}, {}, ["args.cni.ips[0]", "a string"]),
    ({"args": "x"}, {}, ["args", "an object"]),
    ({"args": {"cni": []}}, {}, ["args.cni", "an object"]),
    (
        {"runtimeConfig": {"ips": ["10.244.1.5", "10.244.1.6"]}},
        {},
        ["runtimeConfig.ips", "at most one IPv4", "10.244.1.6"],
    ),
    ({}, {"CNI_ARGS": "IP=10.244.1.5,fd00::1,fd00::2"}, ["CNI_ARGS IP", "at most one IPv6"]),
    ({}, {"CNI_ARGS": "IP=10.244.1.x"}, ["CNI_ARGS IP[0]", '"10.244.1.x"']),
    ({"cni.dev/valid-attachments": "x"}, {}, ["cni.dev/valid-attachments", "a list"]),
    ({"cni.dev/valid-attachments": [1]}, {}, ["cni.dev/valid-attachments[0]", "an object"]),
    (
        {"cni.dev/valid-attachments": [{"containerID": "a"}]},
        {},
        ["cni.dev/valid-attachments[0].ifname is missing"],
    ),
    ({"cni.dev/attachments": [{"ifname": "eth0"}]}, {}, ["cni.dev/attachments[0].containerID"]),
    ({"prevResult": []}, {}, ["prevResult", "an object"]),
]


@pytest.mark.parametrize(("conf", "env", "fragments"), BAD_CONFIGS)
def test_invalid_config_is_error_7_naming_field_and_value(
    conf: dict, env: dict, fragments: list
) -> None:
    e = failure(conf, env)
    assert e.code == 7, e.msg
    for fragment in fragments:
        assert fragment in e.msg


def test_ipam_section_is_error_2_naming_key_and_value() -> None:
    e = failure({"ipam": {"type": "host-local", "subnet": "10.1.0.0/16"}})
    assert e.code == 2
    assert '"ipam"' in e.msg and "host-local" in e.msg and "remove" in e.msg


# --- aliases ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("runtime", "cni_args", "expected"),
    [
        ({}, "", ()),
        ({"aliases": ["web", "db"]}, "", ("web", "db")),
        ({"aliases": {"blue": ["web"], "red": ["other"]}}, "", ("web",)),  # podman's map
        ({"aliases": {"red": ["other"]}}, "", ()),
        ({"aliases": ["db"]}, "K8S_POD_NAME=web", ("web", "db")),
        ({"aliases": ["db"]}, "NETPLUG_NAME=web", ("web", "db")),
        ({}, "K8S_POD_NAME=pod;NETPLUG_NAME=mine", ("mine",)),
        ({"aliases": ["web", "db", "Web", "web"]}, "K8S_POD_NAME=db", ("db", "web")),
        ({"aliases": ["under_score", "-dash"]}, "", ("under_score", "-dash")),  # kept: ADD skips
        ({"aliases": None}, "", ()),
    ],
)
def test_aliases(runtime: dict, cni_args: str, expected: tuple) -> None:
    conf = conf_of({"runtimeConfig": runtime}, {"CNI_ARGS": cni_args})
    assert conf.aliases == expected


# --- static IPs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args_ips", "runtime_ips", "cni_arg_ip", "expected"),
    [
        (None, None, "", ()),
        (["10.244.1.5"], ["10.244.1.6"], "10.244.1.7", (ip_address("10.244.1.5"),)),
        (None, ["10.244.1.6/24"], "10.244.1.7", (ip_interface("10.244.1.6/24"),)),
        ([], ["10.244.1.6"], "10.244.1.7", (ip_address("10.244.1.6"),)),  # empty: next one
        (None, None, "10.244.1.7", (ip_address("10.244.1.7"),)),
        (
            None,
            None,
            "10.244.1.7,fd00:244::7/64",
            (ip_address("10.244.1.7"), ip_interface("fd00:244::7/64")),
        ),
        (
            ["fd00::5", "10.9.9.9/16"],
            None,
            "",
            (ip_address("fd00::5"), ip_interface("10.9.9.9/16")),
        ),
    ],
)
def test_static_ip_priority(args_ips, runtime_ips, cni_arg_ip: str, expected: tuple) -> None:
    conf: dict = {}
    if args_ips is not None:
        conf["args"] = {"cni": {"ips": args_ips}}
    if runtime_ips is not None:
        conf["runtimeConfig"] = {"ips": runtime_ips}
    env = {"CNI_ARGS": f"IP={cni_arg_ip}" if cni_arg_ip else ""}
    assert conf_of(conf, env).static_ips == expected


@pytest.mark.parametrize(
    "ips", [["10.244.77.7", "10.244.77.7"], ["10.244.77.7", "10.244.77.7/24", "fd00::7"]]
)
def test_one_address_listed_twice_is_one_request(ips: list[str]) -> None:
    """``podman network reload`` lists a container's ``--ip`` twice in
    runtimeConfig.ips (its own, then the address it holds): one address, not two."""
    conf = conf_of({"runtimeConfig": {"ips": ips}}, {})
    assert [getattr(ip, "ip", ip) for ip in conf.static_ips][:1] == [ip_address("10.244.77.7")]
    assert len(conf.static_ips) == len({ip.split("/")[0] for ip in ips})


@pytest.mark.parametrize(
    ("runtime", "cni_args", "expected"),
    [
        ({}, "", ""),
        ({}, "IgnoreUnknown=1;MAC=02:00:00:00:00:4A", "02:00:00:00:00:4a"),  # podman
        ({"mac": "c2:11:22:33:44:55"}, "MAC=02:00:00:00:00:42", "c2:11:22:33:44:55"),
        ({"mac": "C2-11-22-33-44-55"}, "", "c2:11:22:33:44:55"),  # as Go's ParseMAC takes it
    ],
)
def test_a_mac_is_asked_for_by_capability_or_cni_args(runtime, cni_args, expected) -> None:
    assert conf_of({"runtimeConfig": runtime}, {"CNI_ARGS": cni_args}).mac == expected


@pytest.mark.parametrize(
    ("runtime", "cni_args", "named"),
    [
        ({"mac": "01:00:5e:00:00:01"}, "", "runtimeConfig.mac"),  # multicast
        ({"mac": 5}, "", "runtimeConfig.mac"),
        ({}, "MAC=00:00:00:00:00:00", "CNI_ARGS MAC"),
        ({}, "MAC=02:00:00:00:42", "CNI_ARGS MAC"),
        ({}, "MAC=02:00:00:00:00:4g", "CNI_ARGS MAC"),
    ],
)
def test_a_bad_mac_is_refused_naming_where_it_came_from(runtime, cni_args, named) -> None:
    refused = failure({"runtimeConfig": runtime}, {"CNI_ARGS": cni_args})
    assert refused.code == 7 and named in refused.msg


# --- GC attachments --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("conf", "expected"),
    [
        ({}, None),
        ({"cni.dev/valid-attachments": []}, ()),  # meaningful: keep nothing
        (
            {"cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0", "x": 1}]},
            (("a", "eth0"),),
        ),
        ({"cni.dev/attachments": [{"containerID": "b", "ifname": "net1"}]}, (("b", "net1"),)),
        (
            {
                "cni.dev/valid-attachments": [{"containerID": "new", "ifname": "eth0"}],
                "cni.dev/attachments": [{"containerID": "old", "ifname": "eth0"}],
            },
            (("new", "eth0"),),
        ),
    ],
)
def test_valid_attachments(conf: dict, expected) -> None:
    assert conf_of(conf).valid_attachments == expected


# --- the IPAM delegate's config --------------------------------------------------------

IPAM_CONF = {
    "cniVersion": "1.0.0",
    "name": "blue",
    "type": "bridge",
    "bridge": "cni0",
    "mtu": 9000,
    "vxlan": "not netplug-ipam's business",
    "ipam": {
        "type": "netplug-ipam",
        "subnet": "10.244.0.0/16",
        "subnet6": "fd00:244::/48",
        "hostBlockPrefix": 26,
        "hostBlockPrefix6": 96,
        "store": "sqlite:///tmp/np.db",
        "hostName": "node-7",
        "dns": {"domain": "corp.test"},
        "runDir": "/tmp/run",
        "logFile": "/tmp/ipam.log",
    },
    "runtimeConfig": {"aliases": ["db"], "ips": ["10.244.3.3"]},
}


def test_ipam_conf_reads_the_ipam_section() -> None:
    conf = parse_ipam_conf(IPAM_CONF, {**ENV, "CNI_ARGS": "K8S_POD_NAME=web"})
    assert (conf.cni_version, conf.name, conf.type) == ("1.0.0", "blue", "netplug-ipam")
    assert (conf.subnet, conf.subnet6) == (ip_network("10.244.0.0/16"), ip_network("fd00:244::/48"))
    assert (conf.host_block_prefix, conf.host_block_prefix6) == (26, 96)
    assert (conf.store, conf.host_name, conf.domain) == (
        "sqlite:///tmp/np.db",
        "node-7",
        "corp.test",
    )
    assert (conf.run_dir, conf.log_file) == ("/tmp/run", "/tmp/ipam.log")
    assert conf.aliases == ("web", "db")
    assert conf.static_ips == (ip_address("10.244.3.3"),)
    # The data-path fields belong to the calling plugin: defaults here.
    assert (conf.vxlan, conf.mtu, conf.ip_masq, conf.bridge) == (VxlanConf(), 0, False, "np-blue")
    assert conf.raw == IPAM_CONF


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"ipam": DROP}, "ipam is missing"),
        ({"ipam": "netplug-ipam"}, "ipam: expected an object"),
        ({"ipam": {"type": "netplug-ipam"}}, "ipam.subnet is missing"),
        ({"ipam": {**IPAM_CONF["ipam"], "hostBlockPrefix": 8}}, "ipam.hostBlockPrefix"),
        ({"ipam": {**IPAM_CONF["ipam"], "dns": {"domain": "x_y"}}}, "ipam.dns.domain"),
        ({"ipam": {**IPAM_CONF["ipam"], "runDir": "rel"}}, "ipam.runDir"),
    ],
)
def test_ipam_conf_errors_name_the_ipam_path(change: dict, fragment: str) -> None:
    with pytest.raises(CNIError) as e:
        parse_ipam_conf(_merge(IPAM_CONF, change), ENV)
    assert e.value.code == 7
    assert fragment in e.value.msg


def test_ipam_routes_are_parsed_with_the_config() -> None:
    routes = [{"dst": "0.0.0.0/0"}, {"dst": "10.9.0.0/16", "gw": "10.244.0.9"}, {"dst": "::/0"}]
    conf = parse_ipam_conf({**IPAM_CONF, "ipam": {**IPAM_CONF["ipam"], "routes": routes}}, ENV)
    assert conf.routes == (
        (ip_network("0.0.0.0/0"), None),
        (ip_network("10.9.0.0/16"), ip_address("10.244.0.9")),
        (ip_network("::/0"), None),
    )
    assert parse_ipam_conf(IPAM_CONF, ENV).routes == ()


@pytest.mark.parametrize(
    ("routes", "fragment"),
    [
        (5, "ipam.routes: expected a list, got 5"),
        (["x"], "ipam.routes[0]: expected an object"),
        ([{}], "ipam.routes[0].dst is missing"),
        ([{"dst": 5}], "ipam.routes[0].dst: expected a string, got 5"),
        ([{"dst": "10.1.2.3/8"}], "ipam.routes[0].dst: expected a CIDR"),
        ([{"dst": "0.0.0.0/0", "gw": 5}], "ipam.routes[0].gw: expected a string, got 5"),
        ([{"dst": "0.0.0.0/0", "gw": "gateway"}], "ipam.routes[0].gw: expected an IPv4"),
        ([{"dst": "0.0.0.0/0"}, {"dst": "0.0.0.0/0", "gw": "fd00::1"}], "ipam.routes[1].gw"),
    ],
)
def test_bad_ipam_routes_are_error_7_naming_the_route(routes: object, fragment: str) -> None:
    """Checked by the parser, before ADD allocates (an integer read as an address,
    or a gateway of the other family, once went into the result)."""
    with pytest.raises(CNIError) as e:
        parse_ipam_conf(_merge(IPAM_CONF, {"ipam": {**IPAM_CONF["ipam"], "routes": routes}}), ENV)
    assert e.value.code == 7
    assert fragment in e.value.msg, e.value.msg
