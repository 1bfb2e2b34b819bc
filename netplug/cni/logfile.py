"""The plugins' log file: one line per CNI call (stdout belongs to the result)."""

from __future__ import annotations

import os
import time


def append(path: str, summary: str) -> None:
    """Append ``summary`` to ``path``; a log that cannot be written never fails a call."""
    if not path or not summary:
        return
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} pid={os.getpid()} {summary}\n"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "a") as f:
            f.write(line)
    except OSError:
        pass
