"""Malformed calls against the real executable (cni-checklist.md 1.7 and 1.12 item 1).

Every case runs with and without the agent (``netplug_host``) and must end with a
non-zero exit, exactly one CNI error object on stdout carrying the spec's code and a
message that names the offending field or variable and says how to fix it, and the
host exactly as it was: no new link, no store record, no nftables table.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from netplug.agent.releases import PENDING_INTERVAL

from netplug_env import BIN, NetplugHost
from runtimes import run

pytestmark = pytest.mark.netns

DROP = object()  # a conf value that removes the key
FILE = "<file>"  # a conf value, or a fragment of the message: a regular file the test makes
NETNS = "<netns>"  # a fragment of the message: the CNI_NETNS the call was given
# 2 KB of JSON 1000 levels deep: past Python's recursion limit.
DEEP = b'{"cniVersion": "1.0.0", "name": "blue", "x": ' + b"[" * 1000 + b"]" * 1000 + b"}"
ERROR_KEYS = {"cniVersion", "code", "msg", "details"}


@dataclass(frozen=True)
class Case:
    """One bad call: what to send, the code expected and fragments the message must hold."""

    id: str
    code: int
    says: tuple[str, ...]  # the field or variable, and the fix
    command: str = "ADD"
    conf: dict[str, Any] = field(default_factory=dict)  # fields set on the good config
    stdin: bytes | None = None  # raw stdin instead of the config
    container_id: str | None = "c1"
    # "container", "host", "missing", "file", "directory" or None (unset)
    netns: str | None = "container"
    ifname: str | None = "eth0"
    plugin: str = "netplug"
    bug: str = ""  # a known product bug: the case is a strict xfail


def bad_field(name: str, key: str, value: Any, *fixes: str, command: str = "ADD") -> Case:
    """A config field set to a bad value (code 7): the message names the field,
    shows the value as JSON, and says each of ``fixes``."""
    return Case(name, 7, (key, json.dumps(value), *fixes), command=command, conf={key: value})


CASES = [
    Case("stdin-not-json", 6, ("stdin", "not valid JSON"), stdin=b'{"cniVersion": "1.0.0",'),
    Case("stdin-a-list", 6, ("stdin", "expected an object"), stdin=b'[{"cniVersion": "1.0.0"}]'),
    Case("unknown-command", 4, ("CNI_COMMAND", '"FROB"', "ADD DEL CHECK"), command="FROB"),
    Case("no-container-id", 4, ("missing or empty: CNI_CONTAINERID",), container_id=None),
    Case("no-netns", 4, ("missing or empty: CNI_NETNS",), netns=None),
    Case("no-ifname", 4, ("missing or empty: CNI_IFNAME",), ifname=None),
    Case(
        "container-id-dash",
        4,
        ("CNI_CONTAINERID", '"-bad"', "starting with a letter or digit"),
        container_id="-bad",
    ),
    Case(
        "container-id-slash",
        4,
        ("CNI_CONTAINERID", '"a/b"', 'letters, digits, "_", "." or "-"'),
        container_id="a/b",
    ),
    Case(
        "ifname-too-long",
        4,
        ("CNI_IFNAME", '"eth0-far-too-long"', "1 to 15 bytes"),
        ifname="eth0-far-too-long",
    ),
    Case("ifname-slash", 4, ("CNI_IFNAME", '"et/h0"', 'without "/"'), ifname="et/h0"),
    Case(
        "cni-version-unsupported",
        1,
        ("cniVersion", '"9.9.9"', "netplug supports", "1.1.0"),
        conf={"cniVersion": "9.9.9"},
    ),
    Case("ipam-section", 2, ('"ipam"', "remove"), conf={"ipam": {"type": "host-local"}}),
    Case("subnet-missing", 7, ("subnet is missing", "10.244.0.0/16"), conf={"subnet": DROP}),
    bad_field("subnet-prefix-33", "subnet", "10.244.0.0/33", "a CIDR like"),
    bad_field(
        "subnet-host-bits", "subnet", "10.244.1.5/16", "host bits", "did you mean 10.244.0.0/16"
    ),
    bad_field("subnet-ipv6", "subnet", "fd00:244::/48", "an IPv4 CIDR", "subnet6"),
    Case(
        "host-block-prefix-below-subnet",
        7,
        ("hostBlockPrefix", "from 16 to 30", "10.244.0.0/16", "got 8"),
        conf={"hostBlockPrefix": 8},
    ),
    # A store URL is shown as a URL, not as JSON.
    Case("store-unknown-scheme", 7, ("store", "foo://x", "sqlite:///"), conf={"store": "foo://x"}),
    Case(
        "store-relative-sqlite",
        7,
        ("store", "sqlite://relative/netplug.db", "absolute path"),
        conf={"store": "sqlite://relative/netplug.db"},
    ),
    Case("mtu-100", 7, ("mtu", "576", "got 100"), conf={"mtu": 100}),
    Case(
        "vxlan-vni-0", 7, ("vxlan.vni", "from 1 to 16777215", "got 0"), conf={"vxlan": {"vni": 0}}
    ),
    Case("netns-missing", 4, ("CNI_NETNS", "does not exist"), netns="missing"),
    Case(
        "netns-is-the-host",
        8,
        ("CNI_NETNS", "plugin's own network namespace", "container's namespace"),
        netns="host",
    ),
    bad_field("ip-masq-string", "ipMasq", "yes", "true or false"),
    # Hostile stdin (issue 9 item 11): always code 6, from either plugin, for any command.
    Case("stdin-nested-1000-deep", 6, ("stdin", "nested too deeply"), stdin=DEEP),
    Case("stdin-nested-1000-deep-del", 6, ("nested too deeply",), command="DEL", stdin=DEEP),
    Case(
        "stdin-nested-1000-deep-version", 6, ("nested too deeply",), command="VERSION", stdin=DEEP
    ),
    Case(
        "ipam-stdin-nested-1000-deep", 6, ("nested too deeply",), stdin=DEEP, plugin="netplug-ipam"
    ),
    Case(
        "stdin-nan", 6, ("NaN is not a JSON value",), stdin=b'{"cniVersion": "1.0.0", "mtu": NaN}'
    ),
    Case(
        "ipam-stdin-infinity",
        6,
        ("Infinity is not a JSON value",),
        stdin=b'{"cniVersion": "1.0.0", "x": [-Infinity]}',
        plugin="netplug-ipam",
    ),
    Case("stdin-1e999", 6, ("1e999 is out of range",), stdin=b'{"mtu": 1e999}'),
    Case("stdin-5000-digits", 6, ("not valid JSON",), stdin=b'{"mtu": ' + b"9" * 5000 + b"}"),
    Case("stdin-not-utf8", 6, ("not valid JSON", "utf-8"), stdin=b'{"name": "bl\xffue"}'),
    Case("stdin-over-16-mib", 6, ("more than 16 MiB",), stdin=b" " * (16 << 20) + b"{}"),
    # A CNI_NETNS that holds no namespace (item 12): DEL takes it as gone, see below.
    Case(
        "netns-regular-file",
        4,
        ("CNI_NETNS", NETNS, "is a regular file", "/run/netns/NAME"),
        netns="file",
    ),
    Case(
        "netns-directory",
        4,
        ("CNI_NETNS", NETNS, "is a directory", "/proc/PID/ns/net"),
        netns="directory",
    ),
    Case(
        "check-netns-regular-file",
        4,
        ("CNI_NETNS", NETNS, "is a regular file"),
        command="CHECK",
        netns="file",
    ),
    Case(
        "check-netns-directory",
        4,
        ("CNI_NETNS", NETNS, "is a directory"),
        command="CHECK",
        netns="directory",
    ),
    # runDir holds this host's locks and deferred releases: a file cannot.
    Case(
        "run-dir-regular-file", 7, ("runDir", FILE, "expected a directory"), conf={"runDir": FILE}
    ),
    Case("del-run-dir-regular-file", 7, ("runDir", FILE), command="DEL", conf={"runDir": FILE}),
    Case("check-run-dir-regular-file", 7, ("runDir", FILE), command="CHECK", conf={"runDir": FILE}),
    # Names that become store keys (item 13): "h1/evil" nested its records under h1.
    bad_field("host-name-slash", "hostName", "h1/evil", "letters, digits"),
    bad_field("del-host-name-slash", "hostName", "h1/evil", command="DEL"),
    bad_field("host-name-dot-dot", "hostName", ".."),
    Case("host-name-254-chars", 7, ("hostName", "1 to 253"), conf={"hostName": "h" * 254}),
    # A network name is a file name under runDir and part of the NAT table's: longer
    # names made ADD fail with 999 after it had allocated, and DEL with 999 for good.
    Case("network-name-242-chars", 7, ("name", "at most 241"), conf={"name": "n" * 242}),
    Case(
        "del-network-name-250-chars",
        7,
        ("name", "at most 241"),
        command="DEL",
        conf={"name": "n" * 250, "ipMasq": True},
    ),
    Case("log-file-nul", 7, ("logFile", "absolute path"), conf={"logFile": "/tmp/np\u0000.log"}),
]


AGENT_REPORTS = "/netplug/enforcement/"


def _param(case: Case):
    marks = [pytest.mark.xfail(strict=True, reason=case.bug)] if case.bug else []
    return pytest.param(case, id=case.id, marks=marks)


def _links(netns: str) -> dict[str, str]:
    """Link name -> kind in ``netns``."""
    out = run(["ip", "-n", netns, "-j", "-d", "link", "show"]).stdout
    return {
        link["ifname"]: link.get("linkinfo", {}).get("info_kind", "") for link in json.loads(out)
    }


def _state(host: NetplugHost, ctr: str) -> dict[str, Any]:
    # The agent's enforcement report is its own, written on its own schedule (its
    # first one can land during the call): not something a call changed.
    records = {k: v for k, v in host.records().items() if not k.startswith(AGENT_REPORTS)}
    return {
        "host links": _links(host.netns),
        "container links": _links(ctr),
        "records": records,
        "nft": host.nft_tables(),
    }


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_bad_call_is_refused_and_changes_nothing(netplug_host, containers, case: Case):
    ctr = containers()
    regular_file, directory = _not_namespaces(netplug_host.workdir)
    conf = netplug_host.conf()
    for key, value in case.conf.items():
        if value is DROP:
            conf.pop(key)
        else:
            conf[key] = regular_file if value == FILE else value
    netns = {
        "container": ctr,
        "host": netplug_host.netns,
        "missing": f"/run/netns/npt-missing-{uuid.uuid4().hex[:8]}",
        "file": regular_file,
        "directory": directory,
        None: None,
    }[case.netns]
    before = _state(netplug_host, ctr)

    done = netplug_host.call(
        case.command,
        conf,
        stdin=case.stdin,
        container_id=case.container_id,
        netns=netns,
        ifname=case.ifname,
        plugin=case.plugin,
    )

    assert done.status != 0, done
    error = json.loads(done.stdout)  # exactly one JSON document, nothing else
    assert isinstance(error, dict) and set(error) <= ERROR_KEYS, done.stdout
    assert isinstance(error.get("cniVersion"), str) and isinstance(error.get("msg"), str)
    assert error["code"] == case.code, error
    says = [f.replace(FILE, regular_file).replace(NETNS, str(netns)) for f in case.says]
    missing = [fragment for fragment in says if fragment not in error["msg"]]
    assert not missing, f"message {error['msg']!r} lacks {missing}"
    assert _state(netplug_host, ctr) == before
    assert "netplug-" not in before["nft"]


def _not_namespaces(workdir: Path) -> tuple[str, str]:
    """A regular file (what an unmounted /run/netns/NAME leaves) and a directory."""
    regular_file, directory = workdir / "not-a-netns", workdir / "a-directory"
    regular_file.touch()
    directory.mkdir(exist_ok=True)
    return str(regular_file), str(directory)


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_del_takes_a_netns_path_without_a_namespace_as_gone(netplug_host, containers, kind):
    """The spec wants DEL to succeed when the namespace is gone and IPAM to release
    even then; a file left where a namespace was mounted is such a namespace. So DEL
    deletes the host end (and with it the container end), releases, and succeeds."""
    ctr = containers()
    paths = dict(zip(("file", "directory"), _not_namespaces(netplug_host.workdir), strict=True))
    conf = netplug_host.conf()
    netplug_host.add(conf, "c1", ctr)
    assert netplug_host.records("/netplug/attachments/")

    netplug_host.delete(conf, "c1", paths[kind])

    assert netplug_host.veths() == set()
    assert "eth0" not in _links(ctr)
    assert netplug_host.records("/netplug/attachments/") == {}
    assert netplug_host.records("/netplug/ips/") == {}
    netplug_host.delete(conf, "c1", paths[kind])  # and again: DEL is idempotent


def test_a_run_dir_that_is_a_file_costs_the_agent_no_traceback(plain_host, containers):
    """The agent replays deferred releases from every runDir a call named, every
    PENDING_INTERVAL: one that is a file must not log a traceback each time."""
    ctr = containers()
    regular_file, _ = _not_namespaces(plain_host.workdir)
    with plain_host.agent():
        done = plain_host.call(
            "ADD", plain_host.conf(runDir=regular_file), container_id="c1", netns=ctr
        )
        assert done.code == 7, done
        time.sleep(PENDING_INTERVAL + 1)  # the absence of a traceback can only be waited for
        log = plain_host.agent_log()
    assert "Traceback" not in log and "replaying deferred releases" not in log, log


@pytest.mark.parametrize("command", [None, ""], ids=["unset", "empty"])
def test_without_cni_command_the_plugin_says_what_it_is(netplug_host, containers, command):
    """skel's behaviour: no CNI_COMMAND prints "about" (on stderr) and exits 0."""
    ctr = containers()
    before = _state(netplug_host, ctr)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "CNI_CONTAINERID": "c1",
        "CNI_NETNS": f"/run/netns/{ctr}",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/usr/lib/cni",
    }
    if command is not None:
        env["CNI_COMMAND"] = command
    proc = subprocess.run(
        ["ip", "netns", "exec", netplug_host.netns, str(BIN / "netplug")],
        input=json.dumps(netplug_host.conf()).encode(),
        capture_output=True,
        timeout=30,
        env=env,
    )
    assert proc.returncode == 0, proc
    assert proc.stdout == b""
    stderr = proc.stderr.decode()
    assert "CNI plugin for netplug networks" in stderr
    assert "CNI protocol versions supported: 0.1.0" in stderr and "1.1.0" in stderr
    assert _state(netplug_host, ctr) == before
