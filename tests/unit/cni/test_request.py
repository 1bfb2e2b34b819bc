"""parse_request: env + stdin -> Request, or CNIError; version_reply."""

import json
import subprocess
import sys
from ipaddress import ip_network

import pytest

from netplug.cni import MAX_STDIN
from netplug.cni.errors import CNIError
from netplug.cni.netconf import SUPPORTED_VERSIONS, NetConf, VxlanConf, parse_ipam_conf
from netplug.cni.request import MAX_DEPTH, Request, parse_request, version_reply

ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "c0ffee",
    "CNI_NETNS": "/run/netns/test",
    "CNI_IFNAME": "eth0",
    "CNI_PATH": "/opt/cni/bin:/usr/lib/cni",
    "NETPLUG_HOSTNAME": "node-1",
}
CONF = {"cniVersion": "1.1.0", "name": "blue", "type": "netplug", "subnet": "10.244.0.0/16"}
DROP = object()  # an override value that removes the key


def _merge(base: dict, over: dict) -> dict:
    merged = {**base, **over}
    return {k: v for k, v in merged.items() if v is not DROP}


def parse(conf: dict | None = None, env: dict | None = None, **kw) -> Request:
    """parse_request with CONF/ENV updated by `conf`/`env` (DROP removes a key)."""
    stdin = json.dumps(_merge(CONF, conf or {})).encode()
    return parse_request(_merge(ENV, env or {}), stdin, **kw)


def failure(conf: dict | None = None, env: dict | None = None, stdin: bytes | None = None):
    """The CNIError that parsing raises."""
    with pytest.raises(CNIError) as e:
        if stdin is None:
            parse(conf, env)
        else:
            parse_request(_merge(ENV, env or {}), stdin)
    return e.value


# --- the happy path and defaults -------------------------------------------------------


def test_minimal_add_fills_every_default() -> None:
    req = parse()
    assert (req.command, req.cni_version) == ("ADD", "1.1.0")
    assert (req.container_id, req.netns, req.ifname) == ("c0ffee", "/run/netns/test", "eth0")
    assert req.cni_args == {}
    assert req.cni_path == ("/opt/cni/bin", "/usr/lib/cni")
    assert req.env["NETPLUG_HOSTNAME"] == "node-1"
    assert req.conf == NetConf(
        cni_version="1.1.0",
        name="blue",
        type="netplug",
        subnet=ip_network("10.244.0.0/16"),
        subnet6=None,
        host_block_prefix=24,
        host_block_prefix6=64,
        vxlan=VxlanConf(vni=None, port=4789, device=None),
        mtu=0,
        ip_masq=False,
        store="sqlite:///var/lib/netplug/netplug.db",
        host_name="node-1",
        domain="netplug.internal",
        bridge="np-blue",
        log_file="/var/log/netplug/netplug.log",
        run_dir="/run/netplug",
        aliases=(),
        static_ips=(),
        valid_attachments=None,
        prev_result=None,
        raw=CONF,
    )


# --- environment -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "fragments"),
    [
        ({"CNI_COMMAND": DROP}, ["CNI_COMMAND", "ADD DEL CHECK GC STATUS VERSION"]),
        ({"CNI_COMMAND": "add"}, ['CNI_COMMAND "add"', "ADD DEL CHECK GC STATUS VERSION"]),
        ({"CNI_CONTAINERID": DROP}, ["CNI_CONTAINERID"]),
        ({"CNI_NETNS": ""}, ["CNI_NETNS"]),
        ({"CNI_IFNAME": DROP}, ["CNI_IFNAME"]),
        ({"CNI_NETNS": DROP, "CNI_IFNAME": DROP}, ["CNI_NETNS, CNI_IFNAME"]),
        ({"CNI_COMMAND": "DEL", "CNI_CONTAINERID": DROP}, ["DEL", "CNI_CONTAINERID"]),
        ({"CNI_COMMAND": "DEL", "CNI_IFNAME": DROP}, ["DEL", "CNI_IFNAME"]),
        ({"CNI_COMMAND": "CHECK", "CNI_NETNS": DROP}, ["CHECK", "CNI_NETNS"]),
        ({"CNI_CONTAINERID": "-abc"}, ["CNI_CONTAINERID", '"-abc"']),
        ({"CNI_CONTAINERID": "a/b"}, ["CNI_CONTAINERID", '"a/b"']),
        ({"CNI_CONTAINERID": "café"}, ["CNI_CONTAINERID"]),
        ({"CNI_IFNAME": "sixteen-bytes-xx"}, ["CNI_IFNAME", '"sixteen-bytes-xx"']),
        ({"CNI_IFNAME": "é" * 8}, ["CNI_IFNAME"]),  # 8 characters, 16 bytes
        ({"CNI_IFNAME": "."}, ["CNI_IFNAME"]),
        ({"CNI_IFNAME": ".."}, ["CNI_IFNAME"]),
        ({"CNI_IFNAME": "a/b"}, ["CNI_IFNAME"]),
        ({"CNI_IFNAME": "a:b"}, ["CNI_IFNAME"]),
        ({"CNI_IFNAME": "a b"}, ["CNI_IFNAME"]),
        ({"CNI_ARGS": "K8S_POD_NAME=web;garbage"}, ["CNI_ARGS", '"garbage"']),
        ({"CNI_ARGS": "=value"}, ["CNI_ARGS", '"=value"']),
    ],
)
def test_bad_environment_is_error_4_naming_the_variable(env: dict, fragments: list) -> None:
    e = failure(env=env)
    assert e.code == 4
    for fragment in fragments:
        assert fragment in e.msg


def test_environment_is_checked_before_stdin() -> None:
    """skel's order: a missing variable is reported even when stdin is bad too."""
    assert failure(env={"CNI_NETNS": DROP}, stdin=b"{not json").code == 4


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"CNI_COMMAND": "DEL", "CNI_NETNS": DROP}, ("DEL", "c0ffee", "", "eth0")),
        (
            {"CNI_IFNAME": "fifteen-bytes-x"},
            ("ADD", "c0ffee", "/run/netns/test", "fifteen-bytes-x"),
        ),
        ({"CNI_CONTAINERID": "A1_b.c-d"}, ("ADD", "A1_b.c-d", "/run/netns/test", "eth0")),
    ],
)
def test_acceptable_environment(env: dict, expected: tuple) -> None:
    req = parse(env=env)
    assert (req.command, req.container_id, req.netns, req.ifname) == expected


@pytest.mark.parametrize("command", ["GC", "STATUS"])
def test_gc_and_status_need_no_container_variables_nor_cni_path(command: str) -> None:
    env = {"CNI_COMMAND": command, "NETPLUG_HOSTNAME": "node-1"}
    req = parse_request(env, json.dumps(CONF).encode())
    assert (req.container_id, req.netns, req.ifname, req.cni_path) == ("", "", "", ())
    assert req.conf is not None and req.conf.name == "blue"


def test_the_config_goes_to_the_conf_parser() -> None:
    req = parse({"ipam": {"subnet": "10.9.0.0/16"}}, conf_parser=parse_ipam_conf)
    assert req.conf is not None and req.conf.subnet == ip_network("10.9.0.0/16")


def test_cni_args_reach_the_request() -> None:
    req = parse(env={"CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web"})
    assert req.cni_args == {
        "IgnoreUnknown": "1",
        "K8S_POD_NAMESPACE": "default",
        "K8S_POD_NAME": "web",
    }


# --- stdin and versions ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("stdin", "fragment"),
    [
        (b"", "empty"),
        (b"  \n", "empty"),
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe{", "not valid JSON"),
        (b"[1, 2]", "stdin: expected an object"),
        (b'"text"', "stdin: expected an object"),
        (b'{"cniVersion": 1.0, "name": "blue", "subnet": "10.0.0.0/8"}', "cniVersion"),
    ],
)
def test_undecodable_stdin_is_error_6(stdin: bytes, fragment: str) -> None:
    e = failure(stdin=stdin)
    assert e.code == 6
    assert fragment in e.msg


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_every_supported_version_is_accepted_for_add(version: str) -> None:
    assert parse({"cniVersion": version}).conf.cni_version == version


def test_missing_cni_version_means_0_2_0() -> None:
    req = parse({"cniVersion": DROP})
    assert req.cni_version == req.conf.cni_version == "0.2.0"


@pytest.mark.parametrize("version", ["0.5.0", "1.2.0", "", "1.0"])
def test_unsupported_version_is_error_1_listing_ours(version: str) -> None:
    e = failure({"cniVersion": version})
    assert e.code == 1
    assert f'"{version}"' in e.msg
    assert ", ".join(SUPPORTED_VERSIONS) in e.msg


@pytest.mark.parametrize(
    ("command", "version", "ok"),
    [
        ("CHECK", "0.3.1", False),
        ("CHECK", "0.4.0", True),
        ("CHECK", "1.1.0", True),
        ("GC", "1.0.0", False),
        ("GC", "1.1.0", True),
        ("STATUS", "0.4.0", False),
        ("STATUS", "1.1.0", True),
        ("DEL", "0.1.0", True),
    ],
)
def test_version_gates(command: str, version: str, ok: bool) -> None:
    env = {"CNI_COMMAND": command}
    if ok:
        assert parse({"cniVersion": version}, env).command == command
    else:
        e = failure({"cniVersion": version}, env)
        assert e.code == 1
        assert command in e.msg and version in e.msg


@pytest.mark.parametrize(
    ("stdin", "version"),
    [
        (b"", "0.1.0"),
        (b"{}", "0.1.0"),
        (b'{"cniVersion": "1.0.0"}', "1.0.0"),
        (b'{"cniVersion": "9.9.9"}', "9.9.9"),  # a newer runtime asking: answer, don't fail
    ],
)
def test_version_command_needs_only_cni_command(stdin: bytes, version: str) -> None:
    req = parse_request({"CNI_COMMAND": "VERSION"}, stdin)
    assert (req.command, req.cni_version, req.conf) == ("VERSION", version, None)


@pytest.mark.parametrize("stdin", [b"{", b"[]", b'{"cniVersion": 1}'])
def test_version_command_rejects_undecodable_stdin(stdin: bytes) -> None:
    with pytest.raises(CNIError) as e:
        parse_request({"CNI_COMMAND": "VERSION"}, stdin)
    assert e.value.code == 6


def test_version_reply() -> None:
    assert version_reply("0.4.0") == {
        "cniVersion": "0.4.0",
        "supportedVersions": ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"],
    }


# --- start-up cost ---------------------------------------------------------------------


def test_importing_the_cni_core_loads_only_the_standard_library() -> None:
    code = (
        "import json, sys\n"
        "before = set(sys.modules)\n"
        "import netplug.cni.request, netplug.cni.result, netplug.cni.errors\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = {name.split(".")[0] for name in json.loads(out.stdout)}
    foreign = loaded - set(sys.stdlib_module_names) - {"netplug"}
    assert not foreign
    assert "typing" not in loaded  # ~6 ms on every container start


# --- hostile stdin: always a CNIError with the spec's code, never another exception ---


def _nested(depth: int) -> bytes:
    """A config whose "x" holds lists `depth` levels deep (the top object is level 1)."""
    head = json.dumps(CONF)[:-1].encode() + b', "x": '
    return head + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


@pytest.mark.parametrize("command", ["ADD", "DEL", "VERSION"])
@pytest.mark.parametrize(
    ("stdin", "fragment"),
    [
        (b"[" * 1000 + b"]" * 1000, "nested too deeply"),  # the 2 KB
        (_nested(1000), "nested too deeply"),  # the parser's own RecursionError
        (_nested(MAX_DEPTH + 1), "nested too deeply"),  # parses, but walking it is risky
        (b'{"cniVersion": "1.1.0", "x": NaN}', "NaN is not a JSON value"),
        (b'{"cniVersion": "1.1.0", "x": [Infinity]}', "Infinity is not a JSON value"),
        (b'{"cniVersion": "1.1.0", "x": -Infinity}', "-Infinity is not a JSON value"),
        (b'{"cniVersion": "1.1.0", "x": 1e999}', "number 1e999 is out of range"),
        (b'{"cniVersion": "1.1.0", "x": ' + b"9" * 5000 + b"}", "not valid JSON"),
        (b'{"cniVersion": "1.1.0", "name": "\xff\xfe"}', "not valid JSON"),
        (b" " * MAX_STDIN + b"{}", "more than 16 MiB"),
    ],
    ids=[
        "deep-2kb",
        "deep-1000",
        "deep-65",
        "nan",
        "infinity",
        "-infinity",
        "1e999",
        "5000-digits",
        "not-utf8",
        "too-large",
    ],
)
def test_hostile_stdin_is_error_6(command: str, stdin: bytes, fragment: str) -> None:
    e = failure(env={"CNI_COMMAND": command}, stdin=stdin)
    assert (e.code, fragment in e.msg) == (6, True), e.msg


def test_nesting_up_to_the_limit_is_accepted() -> None:
    value, depth = parse_request(ENV, _nested(MAX_DEPTH)).conf.raw["x"], 2
    while value:
        value, depth = value[0], depth + 1
    assert depth == MAX_DEPTH


def test_a_config_as_large_as_allowed_is_read() -> None:
    stdin = json.dumps({**CONF, "pad": ""}).encode()
    stdin = stdin[:-2] + b"a" * (MAX_STDIN - len(stdin)) + b'"}'
    assert len(stdin) == MAX_STDIN
    assert len(parse_request(ENV, stdin).conf.raw["pad"]) > MAX_STDIN - 200


_DEEP = [[[]]]
for _ in range(MAX_DEPTH - 4):
    _DEEP = [_DEEP]
HOSTILE_VALUES = [
    None,
    True,
    0,
    -1,
    1.5,
    10**300,
    1e308,
    "",
    "x" * 5000,
    "\0",
    "\ud800",
    "\udcff",
    "/",
    "..",
    "a/b",
    "/a\0b",
    "/a\ud800",
    "sqlite:///a\0b",
    "etcd://[::1",
    "etcd://h:99999999999",
    "10.0.0.0/33",
    [],
    {},
    [None],
    ["\ud800"],
    [{}],
    {"a": None},
    {"blue": [None]},
    _DEEP,
]
FIELDS = [
    "cniVersion",
    "name",
    "type",
    "subnet",
    "subnet6",
    "hostBlockPrefix",
    "mtu",
    "ipMasq",
    "store",
    "hostName",
    "dns",
    "dns.domain",
    "bridge",
    "logFile",
    "runDir",
    "vxlan",
    "vxlan.vni",
    "vxlan.device",
    "runtimeConfig",
    "runtimeConfig.aliases",
    "runtimeConfig.ips",
    "args",
    "args.cni.ips",
    "prevResult",
    "cni.dev/valid-attachments",
]


def _with(conf: dict, path: str, value: object) -> dict:
    """`conf` with the field at dotted `path` set to `value` (objects made on the way)."""
    conf = json.loads(json.dumps(conf))
    keys = [path] if path.startswith("cni.dev/") else path.split(".")
    node = conf
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    return conf


@pytest.mark.parametrize("field", FIELDS)
def test_any_value_in_any_field_is_accepted_or_a_cni_error(field: str) -> None:
    """What the plugin's stdin may hold, field by field: parsing answers a Request
    or a CNIError whose JSON can be written, never another exception."""
    for command in ("ADD", "DEL", "GC"):
        for value in HOSTILE_VALUES:
            stdin = json.dumps({**_with(CONF, field, value), "cniVersion": "1.1.0"}).encode()
            try:
                parse_request({**ENV, "CNI_COMMAND": command}, stdin)
            except CNIError as e:
                assert json.dumps(e.to_json("1.1.0")).isascii()


@pytest.mark.parametrize("variable", ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS"])
def test_any_value_in_a_cni_variable_is_accepted_or_a_cni_error(variable: str) -> None:
    # os.environ decodes what is not UTF-8 as lone surrogates (surrogateescape).
    for value in ["\udcff", "a" * 5000, "-x", "IP=\udcff", "IP=" + "9" * 5000, "=x", "eth\0"]:
        try:
            parse({}, {variable: value})
        except CNIError as e:
            # A bad CNI_ARGS IP= is a bad static address request: 7, like args.cni.ips.
            assert e.code in (4, 7) and variable in e.msg
