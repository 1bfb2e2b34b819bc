"""The lab's network namespaces and processes, and its record of them.

Every namespace a lab makes starts with its prefix (``PREFIX`` by default;
tests pick their own) and every process it
starts is recorded with its PID and start time in the state file, so that
``netns-lab down`` removes exactly what the lab made, even after a crash.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

PREFIX = "nplab-"
COMMAND_TIMEOUT = 30.0


def run(
    *cmd: str,
    input: bytes | None = None,
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: float = COMMAND_TIMEOUT,
) -> subprocess.CompletedProcess[bytes]:
    done = subprocess.run(list(cmd), input=input, env=env, capture_output=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.decode().strip()}"
        )
    return done


def create(full: str) -> str:
    """A new namespace ``full`` with ``lo`` up; returns its name."""
    run("ip", "netns", "add", full)
    run("ip", "-n", full, "link", "set", "lo", "up")
    return full


def delete(full: str) -> None:
    run("ip", "netns", "del", full, check=False)


def delete_all(names: list[str]) -> int:
    """Delete many namespaces with one ``ip`` process (-force: past any that is gone
    already); returns how many were asked for."""
    if names:
        script = "".join(f"netns del {name}\n" for name in names).encode()
        run("ip", "-force", "-batch", "-", input=script, check=False, timeout=120)
    return len(names)


def lab_namespaces(prefix: str) -> list[str]:
    out = run("ip", "netns", "list").stdout.decode()
    return [line.split()[0] for line in out.splitlines() if line.startswith(prefix)]


def path(full: str) -> str:
    return f"/run/netns/{full}"


def start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat, which tells our process from a later one with its
    PID; None when the process is gone or a zombie (reaped here if it is our child)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] == "Z":
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return None
    return fields[19]


def rss_kib(pid: int) -> int | None:
    """The process's resident memory (VmRSS) in KiB; None when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return next(
        (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), None
    )


def stop(pid: int, started: str | None, timeout: float = 10.0) -> bool:
    """SIGTERM, then SIGKILL after ``timeout``, the process we started as ``pid``."""
    return bool(stop_all([(pid, started)], timeout))


def stop_all(procs: list[tuple[int, str | None]], timeout: float = 10.0) -> list[int]:
    """SIGTERM to every (pid, start time) that is still the process we started, one
    shared wait, SIGKILL to those left after ``timeout``; the PIDs that were signalled
    (40 agents shutting down at once take as long as the slowest, not the sum)."""
    alive = [(pid, started) for pid, started in procs if started and start_time(pid) == started]
    for pid, _ in alive:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    left = alive
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [(pid, started) for pid, started in left if start_time(pid) == started]
    for pid, _ in left:
        os.kill(pid, signal.SIGKILL)
    return [pid for pid, _ in alive]


def empty_state() -> dict:
    return {"store": "", "hosts": {}, "networks": {}, "containers": {}, "processes": []}


class State:
    """The lab's JSON record: store URL, hosts, containers, processes.

    ``update`` is a read-modify-write under a lock shared by the threads of
    this process (flock) and other netns-lab processes, so that concurrent
    ``run`` calls do not lose each other's containers.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.file = directory / "state.json"

    def load(self) -> dict:
        if not self.file.exists():
            return empty_state()
        return json.loads(self.file.read_text())

    @contextlib.contextmanager
    def update(self) -> Iterator[dict]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / "state.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # per open file: threads exclude each other too
            state = self.load()
            yield state
            tmp = self.file.with_name(f".state.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_text(json.dumps(state, indent=2))
            tmp.replace(self.file)
