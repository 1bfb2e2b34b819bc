"""``policy_table``'s kept libnftables context (the agent's), against the kernel.

Each scenario runs in a child process inside a namespace the test made, so that
the context (whose netlink socket holds its namespace) goes with the child.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from runtimes import make_netns, require_commands, require_root, run

pytestmark = pytest.mark.netns

TABLE = "add table inet netplug\nadd set inet netplug s { type ipv4_addr; }\n"
ELEMENT = "add element inet netplug s { 10.1.0.5 }\n"

# Runs in the namespace: the kept context applies, refuses with nft's words, sees
# what another process did meanwhile, and leaves a thread in another namespace
# to the nft command there.
CHILD = """
import json, subprocess, sys
from netplug.net import NetError, netns, policy_table
table, element, other = sys.argv[1], sys.argv[2], sys.argv[3]
out = {"kept": policy_table.keep_context()}
policy_table.apply(table + element)
try:
    policy_table.apply("add element inet netplug nosuchset { 10.1.0.6 }\\n")
except NetError as e:
    out["refused"] = str(e)
subprocess.run(["nft", "delete", "table", "inet", "netplug"], check=True)
try:
    policy_table.apply(element)  # the set went behind the context's back
except NetError as e:
    out["stale"] = str(e)
policy_table.apply(table + element)
with netns.entered("/run/netns/" + other):
    policy_table.apply("add table inet elsewhere\\n")
print(json.dumps(out))
"""


def tables(netns: str) -> list[str]:
    listed = run(["ip", "netns", "exec", netns, "nft", "-j", "list", "tables"]).stdout
    return [t["table"]["name"] for t in json.loads(listed)["nftables"] if "table" in t]


def test_the_kept_context_applies_refuses_and_stays_in_its_namespace():
    require_root()
    require_commands("nft", packages="nftables")
    with make_netns("npt-nftctx-") as here, make_netns("npt-nftctx-") as other:
        done = subprocess.run(
            ["ip", "netns", "exec", here, sys.executable, "-c", CHILD, TABLE, ELEMENT, other],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
        assert out["kept"] is True  # libnftables is installed with nftables
        assert "nft refused netplug's rules" in out["refused"] and "nosuchset" in out["refused"]
        assert "nft refused" in out["stale"]
        listed = run(
            ["ip", "netns", "exec", here, "nft", "-j", "list", "set", "inet", "netplug", "s"]
        )
        (found,) = [i["set"] for i in json.loads(listed.stdout)["nftables"] if "set" in i]
        assert found["elem"] == ["10.1.0.5"]
        assert tables(here) == ["netplug"]
        assert tables(other) == ["elsewhere"]  # not in the context's namespace
