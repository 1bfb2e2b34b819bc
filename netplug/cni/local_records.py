"""A copy of each attachment's store record on the host itself, under runDir.

The store is the truth; this copy is what ``netplugctl recover`` rebuilds a
store that was reset or replaced from: the kernel keeps a container's veth and
addresses, but not the container ID, names and namespace its records are keyed
and answered by. One small file per attachment, named for its host veth (which
is unique per container ID and ifname, and safe as a file name):
``<runDir>/<host>/attachments/<network>/<host veth>.json``. runDir is a tmpfs
that lives as long as the containers do.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from netplug.ipam.allocations import Attachment

log = logging.getLogger(__name__)


def _dir(run_dir: str, host: str) -> Path:
    return Path(run_dir) / host / "attachments"


def path(run_dir: str, host: str, network: str, host_veth: str) -> Path:
    return _dir(run_dir, host) / network / f"{host_veth}.json"


def write(run_dir: str, host: str, attachment: Attachment, host_veth: str) -> None:
    """Keep ``attachment``'s record (atomically: written aside, then renamed)."""
    target = path(run_dir, host, attachment.network, host_veth)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    tmp.write_text(json.dumps(attachment.record()))
    os.replace(tmp, target)


def remove(run_dir: str, host: str, network: str, host_veth: str) -> None:
    path(run_dir, host, network, host_veth).unlink(missing_ok=True)


def read_all(run_dir: str, host: str) -> dict[str, Attachment]:
    """Every kept record of ``host``, by host veth name; unreadable files are
    logged and skipped."""
    found = {}
    for file in sorted(_dir(run_dir, host).glob("*/*.json")):
        try:
            record = json.loads(file.read_text())
            found[file.stem] = Attachment.from_record(file.parent.name, host, record)
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("skipping unreadable attachment record %s: %s", file, e)
    return found
