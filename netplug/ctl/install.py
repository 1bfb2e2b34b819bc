"""``netplugctl install``: put netplug where container runtimes look for it.

Runtimes exec CNI plugins by name from their plugin directory
(/opt/cni/bin, /usr/lib/cni). Instead of copying pip's console scripts we
write small launchers that start the interpreter with ``-I -S``: isolated and
without ``site``, which saves a few milliseconds on every container start.
Files are written to a temp name and renamed, so a runtime never execs a
half-written file (libcni retries ETXTBSY, but not a truncated script).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import netplug
import netplug.ipam

PLUGINS = {"netplug": "netplug.cni.main", "netplug-ipam": "netplug.ipam.plugin"}


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


def conflist(network: str, subnet: str, store: str, host_name: str | None, version: str) -> dict:
    """A network list with netplug as its one plugin (Debian's runtimes speak up to 1.0.0)."""
    plugin = {
        "type": "netplug",
        "subnet": subnet,
        "store": store,
        "capabilities": {"aliases": True, "ips": True},
    }
    if host_name:
        plugin["hostName"] = host_name
    return {"cniVersion": version, "name": network, "plugins": [plugin]}


def install_conflist(conf_dir: Path, document: dict) -> Path:
    path = conf_dir / f"50-{document['name']}.conflist"
    write_atomically(path, json.dumps(document, indent=2) + "\n", 0o644)
    return path
