"""STATUS, shared by the netplug plugin and netplug-ipam: both answer it alike."""

from __future__ import annotations

from netplug.cni import errors
from netplug.cni.attachment import pools
from netplug.cni.errors import CNIError
from netplug.cni.request import Request
from netplug.host import Host


def cmd_status(req: Request, host: Host) -> None:
    """Ready to serve ADD: the store answers and the pools have room (else code 50)."""
    conf = req.conf
    try:
        host.store.status()
    except Exception as e:
        raise CNIError(errors.NOT_AVAILABLE, f"store {conf.store} is unusable: {e}") from e
    for pool in pools(conf):
        if not host.ipam.has_room(conf.name, pool):
            raise CNIError(errors.NOT_AVAILABLE, f"no free address left in {pool.subnet}")
