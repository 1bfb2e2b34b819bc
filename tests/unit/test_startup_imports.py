"""What the plugins' entry points import: paid on every container start."""

import json
import subprocess
import sys

import pytest


def loaded_by(module: str) -> set[str]:
    """The modules a fresh interpreter holds after importing ``module`` (-P: the source
    tree must not shadow the installed package)."""
    code = f"import sys; import {module}; import json; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return set(json.loads(out.stdout))


# What the interpreter's site machinery brings by itself (an editable install's finder).
SITE = ("__", "_distutils_hack", "sitecustomize")


def test_the_netplug_entry_point_loads_nothing_heavy():
    loaded = loaded_by("netplug.cni.main")
    third_party = {
        m.split(".")[0] for m in loaded if m.split(".")[0] not in sys.stdlib_module_names
    }
    assert {m for m in third_party if not m.startswith(SITE)} == {"netplug"}
    assert {m for m in loaded if m.startswith("netplug")} == {
        "netplug",
        "netplug.cni",
        "netplug.cni.agent_client",
        "netplug.cni.agent_wire",
        "netplug.cni.logfile",
        "netplug.cni.main",
    }
    assert "__future__" not in loaded  # one more module to load, for annotations alone


@pytest.mark.parametrize("module", ["netplug.cni.ipam_plugin", "netplug.cni.dispatch"])
def test_netplug_ipam_never_needs_netlink(module):
    loaded = loaded_by(module)
    assert not {m for m in loaded if m.split(".")[0] in ("pyroute2", "aiohttp", "dnslib")}


def test_netplugd_loads_aiohttp_only_for_its_http_api():
    """A third of the agent's start-up, which the first ADD on a host waits for when
    the plugin starts the agent (autostart); only ``--http`` needs it."""
    assert not {m for m in loaded_by("netplug.agent.daemon") if m.startswith("aiohttp")}
