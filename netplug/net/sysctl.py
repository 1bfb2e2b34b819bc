"""The few kernel settings netplug needs in the host namespace."""

from __future__ import annotations

from pathlib import Path

PROC = Path("/proc/sys/net")


def enable_forwarding(ipv6: bool) -> None:
    """Turn on routing between the bridge and the rest (reference bridge's isGateway).

    /proc/sys/net is resolved against the namespace of the thread that opens
    it, which is the host's here.
    """
    _ensure(PROC / "ipv4/ip_forward", "1")
    if ipv6:
        _ensure(PROC / "ipv6/conf/all/forwarding", "1")


def _ensure(path: Path, value: str) -> None:
    if path.read_text().strip() != value:
        path.write_text(value)
