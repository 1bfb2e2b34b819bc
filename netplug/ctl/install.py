"""``netplugctl install``: put netplug where container runtimes look for it.

Runtimes exec CNI plugins by name from their plugin directory
(/opt/cni/bin, /usr/lib/cni). Instead of copying pip's console scripts we
write small launchers that start the interpreter with ``-I -S``: isolated and
without ``site``, which saves a few milliseconds on every container start.
Files are written to a temp name and renamed, so a runtime never execs a
half-written file (libcni retries ETXTBSY, but not a truncated script).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import netplug
import netplug.ipam
from netplug.cni.netconf import parse_netconf
from netplug.ipam.networks import MAX_VNI

PLUGINS = {"netplug": "netplug.cni.main", "netplug-ipam": "netplug.cni.ipam_plugin"}
# What podman's own default network chains after its main plugin to publish ports
# (``-p``): the reference portmap, fed the container's address from netplug's result.
PORTMAP = {"type": "portmap", "capabilities": {"portMappings": True}}


def _import_root() -> Path | None:
    """The directory that holds the ``netplug`` package with all its subpackages,
    or None for an editable install (whose subpackages need ``site`` to be found)."""
    root = Path(netplug.__file__).resolve().parent.parent
    ipam_root = Path(netplug.ipam.__file__).resolve().parent.parent.parent
    return root if ipam_root == root else None


def launcher(module: str) -> str:
    """The text of a launcher script for ``module``'s ``main``."""
    root = _import_root()
    if root is None:
        head = f"#!{sys.executable} -I\n"
        path = ""
    else:
        head = f"#!{sys.executable} -IS\n"
        path = f"sys.path.insert(0, {str(root)!r})\n"
    return f"{head}import sys\n{path}from {module} import main\nsys.exit(main())\n"


def write_atomically(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)


def install_plugins(bin_dir: Path) -> list[Path]:
    written = []
    for name, module in PLUGINS.items():
        write_atomically(bin_dir / name, launcher(module), 0o755)
        written.append(bin_dir / name)
    return written


def parse_vni(text: str) -> int:
    """``--vni``'s value: a VXLAN network identifier."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_VNI:
        raise argparse.ArgumentTypeError(f"expected an integer from 1 to {MAX_VNI}, got {text!r}")
    return value


def conflist(
    network: str,
    subnet: str,
    store: str,
    host_name: str | None,
    version: str,
    vni: int | None = None,
    portmap: bool = True,
    ip_masq: bool = True,
    autostart: bool = True,
) -> dict:
    """A network list: netplug, then portmap unless ``portmap`` is false (Debian's
    runtimes speak up to 1.0.0). Without ``vni`` the store assigns the network one.
    ``ip_masq``: containers reach the outside from the host's address, as on
    podman's own default network. ``autostart``: the first ADD on a host without
    netplugd starts one (off for hosts that run the systemd unit)."""
    plugin: dict = {
        "type": "netplug",
        "subnet": subnet,
        "ipMasq": ip_masq,
        "store": store,
        "agent": {"autostart": autostart},
        "capabilities": {"aliases": True, "ips": True},
    }
    if host_name:
        plugin["hostName"] = host_name
    if vni is not None:
        plugin["vxlan"] = {"vni": vni}
    plugins = [plugin, PORTMAP] if portmap else [plugin]
    return {"cniVersion": version, "name": network, "plugins": plugins}


def check(document: dict) -> None:
    """Raise CNIError, naming the field, when the plugin would refuse the conflist's
    netplug config (a mistyped --subnet, --cni-version or --store): it would
    otherwise fail every container start, on every host it is copied to."""
    plugin = {**document["plugins"][0], "cniVersion": document["cniVersion"]}
    # Each host decides its hostName at ADD (config, then NETPLUG_HOSTNAME, then its
    # hostname): a valid name stands in for it here, whatever this machine is called.
    parse_netconf({**plugin, "name": document["name"]}, {"NETPLUG_HOSTNAME": "install"})


def chained_elsewhere(document: dict, bin_dir: Path) -> list[str]:
    """The plugins of the conflist's chain that ``bin_dir`` lacks: the reference
    plugins come with the runtime's packages, not with netplug."""
    names = [plugin["type"] for plugin in document["plugins"]]
    return [name for name in names if name not in PLUGINS and not (bin_dir / name).exists()]


def install_conflist(conf_dir: Path, document: dict) -> Path:
    path = conf_dir / f"50-{document['name']}.conflist"
    write_atomically(path, json.dumps(document, indent=2) + "\n", 0o644)
    return path
