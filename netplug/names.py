"""Rules for the names netplug writes into store keys and paths, and for DNS labels.

A container ID, a network name or a host name becomes one component of a key
(``/netplug/attachments/<network>/<host>/<container>/<ifname>``) and, for the
network and the host, of a path under ``runDir``. A "/" in one would nest its
records under another name's ("h1/evil" would list as host h1's and show a
phantom host "evil"), and "." or ".." would climb out of ``runDir``: so every
such name is checked against these rules where it enters netplug (the CNI
config and variables, netplugd's and netplugctl's options). DNS labels have
rules of their own (``is_dns_label``), shared by the CNI config and the DNS
server, neither of which imports the other.

Standard library only, nothing imported: the CNI request parser loads it.
"""

from __future__ import annotations

from collections.abc import Callable

ID_RULE = 'letters, digits, "_", "." or "-", starting with a letter or digit'
# A fully qualified name's length: the machine's hostname (at most 64 characters
# on Linux), "node-1.example.com" and the like all fit, and so does a path
# component (255 bytes).
HOST_NAME_MAX = 253
HOST_NAME_RULE = f"1 to {HOST_NAME_MAX} {ID_RULE}"
# A network name is a file name under runDir (``networks/<network>.json``, written
# as ``.<network>.json.<thread id>``: 255 bytes with a 7-digit thread ID) and part of
# its NAT table's name (``netplug-<network>``, nftables' limit 255): past it, ADD
# failed after allocating and DEL failed for good.
NETWORK_NAME_MAX = 241
NETWORK_NAME_RULE = f"{ID_RULE}, at most {NETWORK_NAME_MAX} characters"


def is_id(s: str) -> bool:
    """True when `s` is a valid container ID or network name (see ID_RULE)."""
    # Spec: container IDs and network names match ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ; the
    # leading alnum also keeps "." and ".." out, so either is safe as a path component.
    return s.isascii() and s[:1].isalnum() and all(c.isalnum() or c in "_.-" for c in s)


def is_network_name(s: str) -> bool:
    """True when `s` can name a network (see NETWORK_NAME_RULE)."""
    return len(s) <= NETWORK_NAME_MAX and is_id(s)


def is_host_name(s: str) -> bool:
    """True when `s` can name a host in the store (see HOST_NAME_RULE)."""
    return len(s) <= HOST_NAME_MAX and is_id(s)


def is_dns_label(s: str) -> bool:
    """True when `s` is a DNS label (RFC 1123): 1-63 ASCII letters, digits or hyphens,
    neither starting nor ending with a hyphen. Case-insensitive."""
    return (
        0 < len(s) <= 63
        and s.isascii()
        and s.replace("-", "a").isalnum()
        and not s.startswith("-")
        and not s.endswith("-")
    )


def cli_type(is_valid: Callable[[str], bool], what: str, rule: str) -> Callable[[str], str]:
    """An argparse ``type`` that refuses what `is_valid` refuses, saying `rule`."""

    def checked(text: str) -> str:
        if not is_valid(text):
            from argparse import ArgumentTypeError  # only the CLIs get here

            raise ArgumentTypeError(f"{text!r} is not a valid {what}: expected {rule}")
        return text

    return checked


# argparse types for the options that name a host or a network (netplugd, netplugctl).
HOST_NAME = cli_type(is_host_name, "host name", HOST_NAME_RULE)
NETWORK_NAME = cli_type(is_network_name, "network name", NETWORK_NAME_RULE)
