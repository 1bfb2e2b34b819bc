"""The plugin <-> agent framing, one call per connection.

The plugin pays its imports on every container start, and ``json`` alone
costs as much as the interpreter's start-up (it pulls in ``re``, ``enum``
and ``collections``), so the frames are plain bytes:

    call:  b"<n>\\n" + n bytes of "KEY=VALUE" entries joined by NUL + stdin
    reply: b"<status>\\n<log file>\\n<summary>\\n" + the plugin's stdout

``status`` is the plugin's exit status, or ``declined`` when the agent does
not serve the call's store or host (the plugin then runs it itself).
Environment entries cannot contain NUL (they are C strings); the log file
and summary are single lines by construction.
"""

from netplug.cni import MAX_STDIN

DECLINED = b"declined"
MAX_ENV = 1 << 20  # the forwarded CNI_*/NETPLUG_* entries: a CNI_ARGS is a few KB
# The longest call a plugin sends: the header line, the environment, and stdin
# up to a byte past MAX_STDIN (which the parser then refuses, code 6).
MAX_CALL = 24 + MAX_ENV + MAX_STDIN + 1


def encode_call(env: dict[str, str], stdin: bytes) -> bytes:
    block = b"\0".join(f"{k}={v}".encode("utf-8", "surrogateescape") for k, v in env.items())
    return b"%d\n" % len(block) + block + stdin


def decode_call(data: bytes) -> tuple[dict[str, str], bytes]:
    """Raises ValueError on a malformed frame."""
    size, rest = data.split(b"\n", 1)
    block, stdin = rest[: int(size)], rest[int(size) :]
    env = {}
    for entry in block.split(b"\0") if block else ():
        key, _, value = entry.decode("utf-8", "surrogateescape").partition("=")
        env[key] = value
    return env, stdin


def _line(text: str) -> bytes:
    return text.replace("\n", " ").encode("utf-8", "surrogateescape")


def encode_reply(status: int | None, log_file: str, summary: str, stdout: bytes) -> bytes:
    """``status`` None means declined."""
    head = DECLINED if status is None else str(status).encode()
    return b"\n".join([head, _line(log_file), _line(summary), stdout])


def decode_reply(data: bytes) -> tuple[int | None, str, str, bytes]:
    """(status or None when declined, log file, summary, stdout); ValueError when malformed."""
    head, log_file, summary, stdout = data.split(b"\n", 3)
    status = None if head == DECLINED else int(head)
    return status, log_file.decode("utf-8", "replace"), summary.decode("utf-8", "replace"), stdout
