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
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

from netplug_env import BIN, NetplugHost
from runtimes import run

pytestmark = pytest.mark.netns

DROP = object()  # a conf value that removes the key
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
    netns: str | None = "container"  # "container", "host", "missing" or None (unset)
    ifname: str | None = "eth0"
    bug: str = ""  # a known product bug: the case is a strict xfail


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
    Case(
        "subnet-prefix-33",
        7,
        ("subnet", '"10.244.0.0/33"', "a CIDR like"),
        conf={"subnet": "10.244.0.0/33"},
    ),
    Case(
        "subnet-host-bits",
        7,
        ("subnet", '"10.244.1.5/16"', "host bits", "did you mean 10.244.0.0/16"),
        conf={"subnet": "10.244.1.5/16"},
    ),
    Case(
        "subnet-ipv6",
        7,
        ("subnet", '"fd00:244::/48"', "an IPv4 CIDR", "subnet6"),
        conf={"subnet": "fd00:244::/48"},
    ),
    Case(
        "host-block-prefix-below-subnet",
        7,
        ("hostBlockPrefix", "from 16 to 30", "10.244.0.0/16", "got 8"),
        conf={"hostBlockPrefix": 8},
    ),
    Case(
        "store-unknown-scheme",
        7,
        ("store", "foo://x", "sqlite:///"),
        conf={"store": "foo://x"},
    ),
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
    Case("ip-masq-string", 7, ("ipMasq", "true or false", '"yes"'), conf={"ipMasq": "yes"}),
]


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
    return {
        "host links": _links(host.netns),
        "container links": _links(ctr),
        "records": host.records(),
        "nft": host.nft_tables(),
    }


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_bad_call_is_refused_and_changes_nothing(netplug_host, containers, case: Case):
    ctr = containers()
    conf = netplug_host.conf()
    for key, value in case.conf.items():
        if value is DROP:
            conf.pop(key)
        else:
            conf[key] = value
    netns = {
        "container": ctr,
        "host": netplug_host.netns,
        "missing": f"/run/netns/npt-missing-{uuid.uuid4().hex[:8]}",
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
    )

    assert done.status != 0, done
    error = json.loads(done.stdout)  # exactly one JSON document, nothing else
    assert isinstance(error, dict) and set(error) <= ERROR_KEYS, done.stdout
    assert isinstance(error.get("cniVersion"), str) and isinstance(error.get("msg"), str)
    assert error["code"] == case.code, error
    missing = [fragment for fragment in case.says if fragment not in error["msg"]]
    assert not missing, f"message {error['msg']!r} lacks {missing}"
    assert _state(netplug_host, ctr) == before
    assert "netplug-" not in before["nft"]


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
