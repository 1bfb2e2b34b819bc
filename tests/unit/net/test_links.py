"""Link lookups by ioctl: read-only, in the test's own namespace (no root needed)."""

from pathlib import Path

from netplug.net import links


def test_mtu_reads_what_the_kernel_reports():
    assert links.mtu("lo") == int(Path("/sys/class/net/lo/mtu").read_text())
    assert links.mtu("npt-no-such-link") is None
