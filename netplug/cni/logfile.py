"""The plugins' log file: one line per CNI call (stdout belongs to the result).

On the plugin's start-up path: ``posix`` (built in) rather than ``os``, which
costs the plugin more than a millisecond to import.
"""

import posix
import time

FLAGS = posix.O_WRONLY | posix.O_APPEND | posix.O_CREAT | posix.O_CLOEXEC


def append(path: str, summary: str) -> None:
    """Append ``summary`` to ``path``; a log that cannot be written never fails a call."""
    if not path or not summary:
        return
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} pid={posix.getpid()} {summary}\n"
    try:
        try:
            fd = posix.open(path, FLAGS, 0o644)
        except FileNotFoundError:
            import os  # the first call on a host: make the directory

            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = posix.open(path, FLAGS, 0o644)
        try:
            posix.write(fd, line.encode("utf-8", "replace"))
        finally:
            posix.close(fd)
    except (OSError, ValueError):  # ValueError: a NUL or lone surrogate in the path
        pass
