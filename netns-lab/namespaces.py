"""Creating, using and removing the lab's network namespaces (via iproute2).

Every namespace the lab makes is named with ``PREFIX``, and every process it
starts is recorded with its PID in the lab's state directory, so that
``netns-lab down`` can remove exactly what the lab made, even after a crash.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

PREFIX = "nplab-"
COMMAND_TIMEOUT = 30.0


def run(
    *cmd: str, input: bytes | None = None, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    done = subprocess.run(
        list(cmd), input=input, env=env, capture_output=True, timeout=COMMAND_TIMEOUT
    )
    if check and done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.decode().strip()}"
        )
    return done


def create(name: str) -> str:
    """A new namespace ``PREFIX + name`` with ``lo`` up; returns its name."""
    full = PREFIX + name
    run("ip", "netns", "add", full)
    run("ip", "-n", full, "link", "set", "lo", "up")
    return full


def delete(full: str) -> None:
    run("ip", "netns", "del", full, check=False)


def lab_namespaces() -> list[str]:
    out = run("ip", "netns", "list").stdout.decode()
    return [line.split()[0] for line in out.splitlines() if line.startswith(PREFIX)]


def path(full: str) -> str:
    return f"/run/netns/{full}"


class State:
    """The lab's record of the processes it started (PID and start time)."""

    def __init__(self, directory: Path) -> None:
        self.file = directory / "processes.json"
        directory.mkdir(parents=True, exist_ok=True)

    def load(self) -> list[dict]:
        return json.loads(self.file.read_text()) if self.file.exists() else []

    def add(self, pid: int, what: str) -> None:
        self.file.write_text(
            json.dumps([*self.load(), {"pid": pid, "start": _start_time(pid), "what": what}])
        )

    def kill_all(self) -> list[str]:
        """Stop every recorded process that is still the one we started."""
        stopped = []
        for proc in self.load():
            if _start_time(proc["pid"]) == proc["start"]:
                os.kill(proc["pid"], 15)
                stopped.append(proc["what"])
        self.file.unlink(missing_ok=True)
        return stopped


def _start_time(pid: int) -> str | None:
    # A PID can be reused; its start time (field 22 of /proc/PID/stat) tells ours apart.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None
