"""Which addresses' connections must be judged again when containers come and go.

A connection keeps its verdict in its ct mark until the rules change; set
elements (containers) do not change them (``plan``). So when an address
leaves a set or map, or stays in it under another container, the
connections of that address may hold a verdict the table no longer gives:
their conntrack entries are deleted (``netplug.net.conntrack``). An address
in no set is judged by subnet rules only, whoever holds it.

Pure: elements in (a ``Dataplane``'s members, or one container's ``Share``),
addresses out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from netplug.policy.plan import Dataplane, Endpoint, Share

Held = dict[str, frozenset[str]]  # address -> the elements that hold it


def held(members: Mapping[str, Iterable[str]]) -> Held:
    """Each container address among ``members`` (elements by set name), with what
    holds it: "SET" for a set's element, "MAP : jump CHAIN" for a map's. A
    prefix (a subnet, a CIDR peer) is no container's."""
    found: dict[str, set[str]] = {}
    for name, items in members.items():
        for item in items:
            address, _, verdict = item.partition(" : ")
            if "/" not in address:
                found.setdefault(address, set()).add(f"{name} : {verdict}" if verdict else name)
    return {a: frozenset(elements) for a, elements in found.items()}


def departed(before: Held, after: Held) -> set[str]:
    """The addresses ``before`` holds that ``after`` holds otherwise, or not at all."""
    return {a for a, elements in before.items() if after.get(a) != elements}


def departed_shares(
    was: Mapping[str, tuple[Endpoint, Share]],
    now: Mapping[str, tuple[Endpoint, Share]],
    me: str,
) -> set[str]:
    """``departed`` between two fills of one plan (each container's endpoint and
    share, by attachment key): the addresses of the containers that went, or
    whose share changed. A container of host ``me`` that went is left out: its
    DEL deletes its own entries."""
    found: set[str] = set()
    for key, (endpoint, share) in was.items():
        kept = now.get(key)
        if kept is not None and (kept is was[key] or kept[1] == share):
            continue
        if kept is None and endpoint.host == me:
            continue
        found |= departed(held(share), held(kept[1]) if kept is not None else {})
    return found


def departed_between(before: Dataplane | None, after: Dataplane | None) -> set[str]:
    """``departed`` between two whole tables (one read back from the kernel, say);
    none when either has no table or the generation changed (then every
    connection is judged again anyway)."""
    if before is None or after is None or before.generation != after.generation:
        return set()
    return departed(held(before.members), held(after.members))
