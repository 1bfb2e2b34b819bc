"""netplug's own nftables table (``inet netplug``), as the kernel holds it.

The batches are ``netplug.policy.plan``'s text; this module only runs them
through ``nft -f -`` in the caller's namespace (one batch, one kernel
transaction) and reads the table back as ``nft -j`` lists it. The ``nft``
binary rather than libnftables: python3-nftables is not installed with the
distribution's nftables, and one exec (2.4 ms median here) per batch is paid once per
ADD, DEL or store change, never per packet or per element.
"""

from __future__ import annotations

import json
import subprocess

from netplug import faults
from netplug.net import NetError

NFT_TIMEOUT = 10.0


def _nft(args: list[str], script: str = "") -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["nft", *args], input=script, capture_output=True, text=True, timeout=NFT_TIMEOUT
        )
    except FileNotFoundError as e:
        raise NetError("network isolation needs the nft command: apt-get install nftables") from e
    except subprocess.TimeoutExpired as e:
        raise NetError(f"nft did not answer within {NFT_TIMEOUT:.0f} s") from e


def apply(script: str) -> None:
    """Run one batch (nothing for ""); raises NetError with nft's complaint."""
    if not script:
        return
    faults.check("policy-table", NetError)  # the kernel refusing every batch, for the tests
    done = _nft(["-f", "-"], script)
    if done.returncode != 0:
        raise NetError(f"nft refused netplug's rules: {done.stderr.strip()[:2000]}")


def listing(table: str) -> dict | None:
    """``table`` ("FAMILY NAME") as ``nft -j list table`` decodes; None when absent."""
    return _listed(["table"], table)


def counters(table: str) -> dict | None:
    """``table``'s named counters as ``nft -j list counters table`` decodes (one
    exec, every counter); None when the table is absent."""
    return _listed(["counters", "table"], table)


def _listed(what: list[str], table: str) -> dict | None:
    done = _nft(["-j", "list", *what, *table.split()])
    if done.returncode != 0:
        if "No such file" in done.stderr:
            return None
        raise NetError(f"nft could not list {' '.join(what)} {table}: {done.stderr.strip()}")
    return json.loads(done.stdout)


def remove(table: str) -> None:
    """Delete ``table``, whether or not it exists (one batch: add, then delete)."""
    apply(f"add table {table}\ndelete table {table}\n")
