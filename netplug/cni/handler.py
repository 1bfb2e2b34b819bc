"""The netplug plugin as a ``dispatch.Plugin``: what the agent and the plugin's
in-process fallback both run (this is where pyroute2 gets imported)."""

from __future__ import annotations

from collections.abc import Mapping

from pyroute2.netlink.exceptions import NetlinkError

from netplug.cni import dispatch
from netplug.cni.commands import COMMANDS, ON_RESET_STORE
from netplug.net import NetError

NETPLUG = dispatch.Plugin(
    COMMANDS, expected=(NetError, NetlinkError), on_reset_store=ON_RESET_STORE
)


def handle(
    env: Mapping[str, str], stdin: bytes, host_for: dispatch.HostFor, seen_by: int = 0
) -> dispatch.Reply:
    return dispatch.handle(NETPLUG, env, stdin, host_for, seen_by)


def handle_in_process(env: Mapping[str, str], stdin: bytes) -> dispatch.Reply:
    return dispatch.handle_in_process(NETPLUG, env, stdin)
