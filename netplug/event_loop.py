"""How the asyncio programs (netplug-dns, netplugd) run their event loop."""

from __future__ import annotations

import asyncio


def event_loop_runner():
    """uvloop's run when installed (TCP, forwarding, the API; UDP has threads), else asyncio's."""
    try:
        import uvloop

        return uvloop.run
    except (ImportError, AttributeError):
        return asyncio.run
