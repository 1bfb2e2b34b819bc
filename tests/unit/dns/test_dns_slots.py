"""Who keeps a TCP connection: the per-client and total caps, and idle-first eviction."""

from __future__ import annotations

from netplug.dns.slots import Admission, Slots


def test_under_the_caps_everyone_is_admitted() -> None:
    slots: Slots[str] = Slots(per_client=2, total=4)
    assert slots.admit("a1", "A") == Admission(True, None, "")
    assert slots.admit("b1", "B") == Admission(True, None, "")
    assert len(slots) == 2


def test_a_client_at_its_cap_loses_its_longest_idle_connection() -> None:
    slots: Slots[str] = Slots(per_client=2, total=10)
    slots.admit("a1", "A")
    slots.admit("a2", "A")
    slots.admit("b1", "B")
    slots.busy("a1")
    slots.idle("a1")  # a1 answered a query: a2 is now the longest idle
    assert slots.admit("a3", "A") == Admission(True, "a2", "client_limit")
    assert len(slots) == 3
    slots.release("a2")  # the closed connection's own cleanup changes nothing
    assert len(slots) == 3
    assert slots.admit("a4", "A") == Admission(True, "a1", "client_limit")


def test_a_client_whose_connections_are_all_busy_is_refused() -> None:
    slots: Slots[str] = Slots(per_client=2, total=10)
    for conn in ("a1", "a2"):
        slots.admit(conn, "A")
        slots.busy(conn)
    assert slots.admit("a3", "A") == Admission(False, None, "client_limit")
    assert slots.admit("b1", "B").admitted  # other clients are not affected
    slots.release("a1")
    assert slots.admit("a3", "A") == Admission(True, None, "")


def test_a_full_server_replaces_the_longest_idle_of_anyone() -> None:
    slots: Slots[str] = Slots(per_client=3, total=4)
    for conn, client in (("a1", "A"), ("a2", "A"), ("b1", "B"), ("c1", "C")):
        slots.admit(conn, client)
    slots.busy("a1")
    assert slots.admit("d1", "D") == Admission(True, "a2", "server_full")
    assert len(slots) == 4
    for conn in ("b1", "c1", "d1"):
        slots.busy(conn)
    assert slots.admit("e1", "E") == Admission(False, None, "server_full")
    slots.idle("c1")
    assert slots.admit("e1", "E") == Admission(True, "c1", "server_full")


def test_release_is_idempotent_and_frees_the_client() -> None:
    slots: Slots[str] = Slots(per_client=1, total=1)
    slots.admit("a1", "A")
    slots.busy("a1")
    slots.release("a1")
    slots.release("a1")
    slots.idle("a1")  # a late mark for a closed connection does not bring it back
    assert len(slots) == 0
    assert slots.admit("b1", "B") == Admission(True, None, "")
