"""A copy of each attachment's store record on the host itself, under runDir.

The store is the truth; this copy is what ``netplugctl recover`` rebuilds a
store that was reset or replaced from: the kernel keeps a container's veth and
addresses, but not the container ID, names and namespace its records are keyed
and answered by. One small file per attachment, named for its host veth (which
is unique per container ID and ifname, and safe as a file name):
``<runDir>/<host>/attachments/<network>/<host veth>.json``. runDir is a tmpfs
that lives as long as the containers do.

``<runDir>/<host>/networks/<network>.json`` keeps the network's record and
this host's VTEP record in it, which the other hosts' overlays need.
``<runDir>/<host>/policies.json`` keeps the store's policies as this host last
read them: they belong to no host, and every host's copy can bring them back.

Beside them, ``<runDir>/<host>/addresses/<network>/<address>`` is a symlink to
the host veth of the attachment that holds the address: ADD checks it, so a
store that hands out an address a live container of this host holds (a store
restored from an old copy, records removed by hand) is caught in one readlink.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from contextlib import suppress
from pathlib import Path

from netplug.ipam.schema import Attachment, Attachments

log = logging.getLogger(__name__)

POLICIES = "policies.json"
NOT_RESTORED = "policies-not-restored.json"  # what recover could not write back


# Plain strings, not pathlib: ADD and DEL pass here, and pathlib's parsing
# cost more than the files' system calls.


def _dir(run_dir: str, host: str) -> str:
    return f"{run_dir}/{host}/attachments"


def path(run_dir: str, host: str, network: str, host_veth: str) -> str:
    return f"{_dir(run_dir, host)}/{network}/{host_veth}.json"


def _address_link(run_dir: str, host: str, network: str, address: object) -> str:
    return f"{run_dir}/{host}/addresses/{network}/{address}"


def holder(run_dir: str, host: str, network: str, address: object) -> str | None:
    """The host veth of the attachment that holds ``address`` here, as last written."""
    try:
        return os.readlink(_address_link(run_dir, host, network, address))
    except FileNotFoundError:
        return None


def write(run_dir: str, host: str, attachment: Attachment, host_veth: str) -> None:
    """Keep ``attachment``'s record (the store's very bytes) and its address links
    (each made aside, then renamed over: a reader never sees half of one)."""
    record = Attachments.encode(attachment)
    _place(path(run_dir, host, attachment.network, host_veth), record)
    for a in attachment.allocations:
        _place(_address_link(run_dir, host, attachment.network, a.address.ip), None, host_veth)


def _place(target: str, content: bytes | None, link_to: str = "") -> None:
    """A file holding ``content``, or a symlink to ``link_to``, renamed into place.
    Directories are made on the first miss only."""
    directory, _, name = target.rpartition("/")
    tmp = f"{directory}/.{name}.{threading.get_native_id()}"
    for attempt in (1, 2):
        try:
            if content is None:
                with suppress(FileNotFoundError):
                    os.unlink(tmp)
                os.symlink(link_to, tmp)
            else:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
                with os.fdopen(fd, "wb") as f:
                    f.write(content)
            break
        except FileNotFoundError:
            if attempt == 2:
                raise
            os.makedirs(directory, exist_ok=True)
    os.replace(tmp, target)


def read(run_dir: str, host: str, network: str, host_veth: str) -> Attachment | None:
    """The attachment behind ``host_veth`` as kept here; None when there is none
    (or it does not read: logged)."""
    target = path(run_dir, host, network, host_veth)
    try:
        with open(target, "rb") as f:
            return Attachments.decode(f.read(), network, host)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:  # the schema's MalformedRecord is a ValueError
        log.warning("unreadable attachment record %s: %s", target, e)
        return None


def remove(run_dir: str, host: str, network: str, host_veth: str) -> None:
    """Forget the attachment behind ``host_veth``: its record, and its address links
    unless another attachment has taken an address over since (idempotent)."""
    for address in held(run_dir, host, network, host_veth):
        with suppress(FileNotFoundError):
            os.unlink(_address_link(run_dir, host, network, address))
    with suppress(FileNotFoundError):
        os.unlink(path(run_dir, host, network, host_veth))


def held(run_dir: str, host: str, network: str, host_veth: str) -> list[str]:
    """The addresses of the attachment behind ``host_veth`` that it still holds
    here (no other attachment has taken them over since); none without a record."""
    return holding(run_dir, host, network, host_veth, read(run_dir, host, network, host_veth))


def holding(
    run_dir: str, host: str, network: str, host_veth: str, attachment: Attachment | None
) -> list[str]:
    """``held``, of the record ``read`` gave: the addresses of ``attachment`` (kept
    for ``host_veth``) that it still holds here."""
    addresses = [str(a.address.ip) for a in attachment.allocations] if attachment else []
    return [a for a in addresses if holder(run_dir, host, network, a) == host_veth]


def write_network(run_dir: str, host: str, network: str, kept: dict) -> None:
    """Keep the network's record and this host's VTEP record in it (``{"network":
    NetworkRecord fields, "vtep": {"vtep", "mac", "vni"} or None}``)."""
    _place(f"{run_dir}/{host}/networks/{network}.json", json.dumps(kept).encode())


def write_policies(run_dir: str, host: str, documents: list[dict], name: str = POLICIES) -> str:
    """Keep the store's policies (normalized documents, sorted by name) when they
    differ from those kept: a change of policies costs one write, a batch of
    other records none. Returns the file's path."""
    target = f"{run_dir}/{host}/{name}"
    content = json.dumps(documents, sort_keys=True).encode()
    with suppress(OSError), open(target, "rb") as f:
        if f.read() == content:
            return target
    _place(target, content)
    return target


def read_policies(run_dir: str, host: str, name: str = POLICIES) -> list[dict] | None:
    """The policy documents kept by ``host``; None when it kept none (or they do
    not read: logged)."""
    target = f"{run_dir}/{host}/{name}"
    try:
        with open(target, "rb") as f:
            documents = json.loads(f.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("skipping unreadable policy copy %s: %s", target, e)
        return None
    if not isinstance(documents, list):
        log.warning("skipping policy copy %s: expected a JSON list", target)
        return None
    return documents


def read_networks(run_dir: str, host: str) -> dict[str, dict]:
    """Every kept network of ``host`` by name; unreadable files are logged and skipped."""
    found = {}
    for file in sorted(Path(run_dir, host, "networks").glob("*.json")):
        try:
            found[file.stem] = json.loads(file.read_text())
        except (OSError, ValueError) as e:
            log.warning("skipping unreadable network record %s: %s", file, e)
    return found


def read_all(run_dir: str, host: str) -> dict[str, Attachment]:
    """Every kept record of ``host``, by host veth name; unreadable files are
    logged and skipped."""
    found = {}
    for file in sorted(Path(_dir(run_dir, host)).glob("*/*.json")):
        try:
            found[file.stem] = Attachments.decode(file.read_bytes(), file.parent.name, host)
        except (OSError, ValueError) as e:  # the schema's MalformedRecord is a ValueError
            log.warning("skipping unreadable attachment record %s: %s", file, e)
    return found
