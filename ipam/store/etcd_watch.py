"""What an etcd watch does next with what its stream gave (pure).

The I/O loop (``EtcdStore.watch``) reads a message or times out, then asks
``step``: hand the message on (READ), leave the member and resume elsewhere at
the last revision seen + 1 (RECONNECT), ask the member whether it still serves
(PROBE, after ``PROBE_AFTER`` of silence), or keep waiting (WAIT). A member
that hangs (SIGSTOP, overload) or lost its leader sends nothing at all, which
is why silence is checked rather than trusted.
"""

from __future__ import annotations

from typing import Any

from .etcd_gateway import error_of

# A stream silent this long has its member asked for its status (PROBE_TIMEOUT to answer).
PROBE_AFTER, PROBE_TIMEOUT = 3.0, 1.0
# A stream that ends with CANCELLED, DEADLINE_EXCEEDED, UNAVAILABLE (etcd stopping, or
# electing, or cut off from its leader while the watch requires one): another member.
_RECONNECT = {1, 4, 14}
DROPPED: dict[str, Any] = {"error": "the watch stream broke"}  # a marker, never sent
READ, RECONNECT, PROBE, WAIT = "read", "reconnect", "probe", "wait"


def step(message: dict[str, Any] | None, silent_for: float) -> str:
    """The next step for ``message`` (None: the read timed out; DROPPED: the stream
    broke) when the stream has said nothing for ``silent_for`` seconds before it."""
    if message is DROPPED:
        return RECONNECT
    if message is None:
        return PROBE if silent_for >= PROBE_AFTER else WAIT
    error = error_of(message)
    return RECONNECT if error is not None and error.code in _RECONNECT else READ


def resume_at(following: int, revisions: list[int]) -> int:
    """The revision a watch resumes at after delivering events at ``revisions``
    (etcd never splits a revision between answers): the last + 1."""
    return revisions[-1] + 1 if revisions else following
