"""Starting and stopping the processes a test or benchmark runs (by their Popen,
never by name)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager

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


@contextmanager
def announcing() -> Iterator[Callable[..., None]]:
    """``start(argv, line, **popen)`` runs ``argv`` and returns once its first line of output
    is ``line`` (it is ready); every process started is killed afterwards, so none
    gets a clean exit (a store writer's commit stays in its journal)."""
    started: list[subprocess.Popen] = []

    def start(argv: list[str], line: str, **popen) -> None:
        pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE}
        proc = subprocess.Popen(argv, text=True, **pipes, **popen)
        started.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == line

    try:
        yield start
    finally:
        for proc in started:
            stop(proc, kill=True)
