"""Stopping the processes a test or benchmark started (by their Popen, never by name)."""

from __future__ import annotations

import subprocess

STOP_TIMEOUT = 10.0


def stop(proc: subprocess.Popen, kill: bool = False, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM (SIGKILL with ``kill``), then SIGKILL if it has not gone within
    ``timeout``; reaped either way. A no-op when it already exited."""
    if proc.poll() is not None:
        return
    if kill:
        proc.kill()
    else:
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)
