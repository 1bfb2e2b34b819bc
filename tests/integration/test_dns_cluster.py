"""Service discovery across lab hosts: netplugd answers on each network's gateway."""

from __future__ import annotations

import subprocess
import time

import pytest

from netplug_env import eventually

pytestmark = pytest.mark.netns

PROPAGATION = 2.0  # the bound: a name answers on another host within 2 s


def gateway(address: str) -> str:
    return address.rsplit(".", 1)[0] + ".1"


def dig(lab, container: str, server: str, *query: str) -> str:
    cmd = [
        "ip",
        "netns",
        "exec",
        lab.container_netns(container),
        "dig",
        f"@{server}",
        "+tries=1",
        "+time=1",
        *query,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout


def short(lab, container: str, server: str, *query: str) -> str:
    return dig(lab, container, server, "+short", *query).strip()


def test_a_name_resolves_on_another_host_and_goes_away_after_del(lab):
    lab.up(2, lab.store_kind)
    client = lab.run_container("host1", "client").split("/")[0]
    web = lab.run_container("host2", "web").split("/")[0]
    started = time.monotonic()  # from the ADD's answer: what the name's publication costs
    assert eventually(
        lambda: short(lab, "client", gateway(client), "web.lab.netplug.internal") == web,
        timeout=PROPAGATION + 1,
    )
    assert time.monotonic() - started < PROPAGATION + 1
    lab.remove_container("web")
    assert eventually(
        lambda: (
            "status: NXDOMAIN" in dig(lab, "client", gateway(client), "web.lab.netplug.internal")
        ),
        timeout=PROPAGATION,
    )


def test_bare_names_ptr_and_nxdomain_from_inside_a_container(lab):
    lab.up(2, lab.store_kind)
    client = lab.run_container("host1", "client").split("/")[0]
    db = lab.run_container("host2", "db").split("/")[0]
    server = gateway(client)
    assert eventually(lambda: short(lab, "client", server, "db") == db)  # bare: same network
    assert short(lab, "client", server, "-x", db) == "db.lab.netplug.internal."
    missing = dig(lab, "client", server, "nope.lab.netplug.internal")
    assert "status: NXDOMAIN" in missing and "SOA" in missing
    tcp = short(lab, "client", server, "+tcp", "db.lab.netplug.internal")
    assert tcp == db
    outside = dig(lab, "client", server, "example.com")
    assert "status: SERVFAIL" in outside  # the lab's agents forward nowhere
