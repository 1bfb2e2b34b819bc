"""Where the DNS registry lives in the store, beside ``netplug.ipam.keys``.

    /netplug/attachments/<network>/<host>/<container>/<ifname>   written by the CNI plugin
    /netplug/blocks/<network>/<block CIDR>                       written by IPAM
    /netplug/dns/<name>                                          API registrations

An API registration's key is its name relative to the DNS domain, lower-cased
(``api``, ``db.prod``); its value is the JSON of ``records.Registration``. One
with a TTL is attached to a store lease of that TTL, so it disappears unless
it is PUT again in time.
"""

from __future__ import annotations

from netplug.ipam.keys import ROOT

__all__ = ["ATTACHMENTS", "BLOCKS", "NAMES", "PREFIXES", "ROOT", "name_key"]

# The parents of ipam.keys' attachment and block keys (tests hold the two in step).
ATTACHMENTS = f"{ROOT}attachments/"
BLOCKS = f"{ROOT}blocks/"
NAMES = f"{ROOT}dns/"

# What the registry follows, in one read: everything else under ROOT is ignored.
PREFIXES = (ATTACHMENTS, BLOCKS, NAMES)


def name_key(name: str) -> str:
    return f"{NAMES}{name}"
