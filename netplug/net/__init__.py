"""Host and container networking through netlink (pyroute2) and nftables.

The only package that talks to the kernel. Every function takes an open
handle for the namespace it works in: a lean ``rtnl.Rtnl`` channel on the
per-container hot path (``netns.channel``), pyroute2's ``IPRoute`` for the
rest (``netns.handle``).
"""


class NetError(Exception):
    """A kernel object is in a state netplug cannot use (names the fix)."""
