"""Host and container networking through netlink (pyroute2) and nftables.

The only package that talks to the kernel. Every function takes an open
``IPRoute`` handle for the namespace it works in; ``netns.handle`` opens one.
"""


class NetError(Exception):
    """A kernel object is in a state netplug cannot use (names the fix)."""
