"""A copy of each attachment's store record on the host itself, under runDir.

The store is the truth; this copy is what ``netplugctl recover`` rebuilds a
store that was reset or replaced from: the kernel keeps a container's veth and
addresses, but not the container ID, names and namespace its records are keyed
and answered by. One small file per attachment, named for its host veth (which
is unique per container ID and ifname, and safe as a file name):
``<runDir>/<host>/attachments/<network>/<host veth>.json``. runDir is a tmpfs
that lives as long as the containers do.

Beside it, ``<runDir>/<host>/addresses/<network>/<address>`` is a symlink to
the host veth of the attachment that holds the address: ADD checks it, so a
store that hands out an address a live container of this host holds (a store
restored from an old copy, records removed by hand) is caught in one readlink.
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


def _address_link(run_dir: str, host: str, network: str, address: object) -> Path:
    return Path(run_dir) / host / "addresses" / network / str(address)


def holder(run_dir: str, host: str, network: str, address: object) -> str | None:
    """The host veth of the attachment that holds ``address`` here, as last written."""
    try:
        return os.readlink(_address_link(run_dir, host, network, address))
    except FileNotFoundError:
        return None


def write(run_dir: str, host: str, attachment: Attachment, host_veth: str) -> None:
    """Keep ``attachment``'s record and its address links (each written aside, then
    renamed over: a reader never sees half of one)."""
    target = path(run_dir, host, attachment.network, host_veth)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    tmp.write_text(json.dumps(attachment.record()))
    os.replace(tmp, target)
    for a in attachment.allocations:
        link = _address_link(run_dir, host, attachment.network, a.address.ip)
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(f".{link.name}.{os.getpid()}")
        tmp.unlink(missing_ok=True)
        os.symlink(host_veth, tmp)
        os.replace(tmp, link)


def remove(run_dir: str, host: str, network: str, host_veth: str) -> None:
    """Forget the attachment behind ``host_veth``: its record, and its address links
    unless another attachment has taken an address over since (idempotent)."""
    target = path(run_dir, host, network, host_veth)
    try:
        attachment = Attachment.from_record(network, host, json.loads(target.read_text()))
    except FileNotFoundError:
        return
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("removing unreadable attachment record %s: %s", target, e)
    else:
        for a in attachment.allocations:
            if holder(run_dir, host, network, a.address.ip) == host_veth:
                _address_link(run_dir, host, network, a.address.ip).unlink(missing_ok=True)
    target.unlink(missing_ok=True)


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
