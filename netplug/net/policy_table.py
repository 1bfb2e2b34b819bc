"""netplug's own nftables table (``inet netplug``), as the kernel holds it.

The batches are ``netplug.policy.plan``'s text; this module only runs them
(one batch, one kernel transaction) in the caller's namespace and reads the
table back as ``nft -j`` lists it. By default through the ``nft`` binary: one
exec per batch, never per packet or per element. A long-lived caller (the
agent) calls ``keep_context`` once: its batches then go through one
libnftables context kept open, in-process (ctypes; python3-nftables is not
installed with the distribution's nftables). That saves the exec and the
cache fill of every ``nft`` run, which is what an ADD's batch costs: one
container's elements took 8-19 ms through ``nft -f`` and 0.4-0.8 ms through
the kept context, beside a table of 50 policies and 1000 containers.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from typing import Any

from netplug import faults
from netplug.net import NetError

NFT_TIMEOUT = 10.0
LIBRARY = "libnftables.so.1"
_NETNS = "/proc/thread-self/ns/net"


class _Context:
    """A libnftables context kept open, in the namespace it was made in (its
    netlink socket's); used by one thread at a time (libnftables contexts are
    not thread-safe)."""

    def __init__(self) -> None:
        import ctypes  # here: the plugin's startup never pays for it

        lib = ctypes.CDLL(LIBRARY)
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        for name in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
            getattr(lib, name).argtypes = [ctypes.c_void_p]
        for name in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
            getattr(lib, name).argtypes = [ctypes.c_void_p]
            getattr(lib, name).restype = ctypes.c_char_p
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        self.lib: Any = lib
        self.netns = os.stat(_NETNS).st_ino
        self.ctx = lib.nft_ctx_new(0)
        if not self.ctx:
            raise OSError("nft_ctx_new failed")
        lib.nft_ctx_buffer_output(self.ctx)  # nothing printed on our stdout
        lib.nft_ctx_buffer_error(self.ctx)
        self.lock = threading.Lock()

    def run(self, script: str) -> str | None:
        """nft's complaint ("" when the batch was applied); None when the calling
        thread is in another namespace than the context's (the caller execs nft)."""
        if os.stat(_NETNS).st_ino != self.netns:
            return None
        with self.lock:
            status = self.lib.nft_run_cmd_from_buffer(self.ctx, script.encode())
            self.lib.nft_ctx_get_output_buffer(self.ctx)  # read: the buffer restarts
            error = (self.lib.nft_ctx_get_error_buffer(self.ctx) or b"").decode(errors="replace")
        return "" if status == 0 else error.strip() or f"libnftables returned {status}"


_context: _Context | None = None


def keep_context() -> bool:
    """Run this process's later batches through one libnftables context, made now
    in the calling thread's namespace (batches from threads in another namespace
    still exec nft there). False, and nothing changes, when libnftables is missing."""
    global _context
    try:
        _context = _Context()
    except OSError:
        return False
    return True


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
    refused = _context.run(script) if _context is not None else None
    if refused is None:
        done = _nft(["-f", "-"], script)
        refused = done.stderr.strip() if done.returncode != 0 else ""
    if refused:
        raise NetError(f"nft refused netplug's rules: {refused[:2000]}")


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
