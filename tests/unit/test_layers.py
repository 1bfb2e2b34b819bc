"""The installed package's import graph: no import runs up the layers, none runs in a circle.

Read statically (``ast`` over every source file of the installed ``netplug``), so an
import made inside a function counts as much as one at the top of a module: both
tie the two modules together. README.md, "Design decisions", draws the layers.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import pkgutil
from dataclasses import dataclass
from pathlib import Path

import netplug

ROOT = "netplug"

# Bottom first. A module may import its own group and any group of a lower rank;
# groups of one rank are siblings and never import each other. An entry names a
# package (with everything under it) or a module; the longest entry that covers a
# module places it, and ROOT covers the top package's own __init__ alone, so a new
# top-level module must be placed here.
LAYERS: list[dict[str, tuple[str, ...]]] = [
    {
        "neutral": (
            ROOT,
            "netplug.names",
            "netplug.locks",
            "netplug.cli_args",
            "netplug.event_loop",
            "netplug.faults",
        )
    },
    {
        "kernel": ("netplug.net",),
        "store": ("netplug.ipam.store",),
        "policy": ("netplug.policy",),  # pure: the model and the nftables plan
    },
    {"ipam": ("netplug.ipam",)},
    {"host": ("netplug.host",), "dns": ("netplug.dns",)},
    {"cni": ("netplug.cni",)},
    {"agent": ("netplug.agent",)},
    {"ctl": ("netplug.ctl",), "lab": ("netplug.lab",)},
]


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (a package's __init__ when a name comes from it)
    where: str  # file:line


def group_of(module: str) -> tuple[int, str] | None:
    """(rank, group) of the longest LAYERS entry covering `module`, None if none does."""
    best: tuple[int, int, str] | None = None
    for rank, groups in enumerate(LAYERS):
        for group, entries in groups.items():
            for entry in entries:
                covers = module == entry or (entry != ROOT and module.startswith(entry + "."))
                if covers and (best is None or len(entry) > best[0]):
                    best = (len(entry), rank, group)
    return None if best is None else best[1:]


def installed_modules() -> dict[str, Path]:
    """Every module of the installed package, by name, with its source file."""
    found = {ROOT: Path(netplug.__file__)}
    for info in pkgutil.walk_packages(netplug.__path__, ROOT + ".", onerror=_unreadable):
        found[info.name] = Path(importlib.util.find_spec(info.name).origin)
    return found


def _unreadable(package: str) -> None:
    raise AssertionError(f"cannot import {package} to list its modules")  # else skipped


def imports_of(module: str, path: Path, known: set[str]) -> list[Import]:
    """The package's own modules that `module` imports, anywhere in its source."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                origin = ".".join([*base, node.module] if node.module else base)
            else:
                origin = node.module
            # ``from package import name``: the submodule `name` when there is one.
            targets = [
                f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in known else origin
                for alias in node.names
            ]
        else:
            continue
        where = f"{path.name}:{node.lineno}"
        found += [
            Import(module, t, where) for t in targets if t == ROOT or t.startswith(ROOT + ".")
        ]
    return list(dict.fromkeys(found))  # one per import statement and target


def import_graph() -> list[Import]:
    modules = installed_modules()
    return [i for m, p in modules.items() for i in imports_of(m, p, set(modules))]


def upward(imports: list[Import]) -> list[str]:
    """Imports of a higher rank's module, or of a sibling group's, each described."""
    bad = []
    for i in imports:
        source, target = group_of(i.source), group_of(i.target)
        if source is None or target is None:
            continue  # test_every_module_has_a_layer names it
        (src_rank, src_group), (dst_rank, dst_group) = source, target
        if dst_rank > src_rank or (dst_rank == src_rank and dst_group != src_group):
            bad.append(
                f"{i.source} ({src_group}, rank {src_rank}) imports {i.target} "
                f"({dst_group}, rank {dst_rank}) at {i.where}"
            )
    return bad


def circles(imports: list[Import]) -> list[list[str]]:
    """The module graph's strongly connected components of more than one module
    (or a module importing itself), by Tarjan's algorithm, iteratively."""
    graph: dict[str, set[str]] = {}
    for i in imports:
        graph.setdefault(i.source, set()).add(i.target)
        graph.setdefault(i.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            nxt = next(successors, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph[node]:
                    found.append(sorted(component))
    return found


def test_every_module_has_a_layer():
    unplaced = sorted(m for m in installed_modules() if group_of(m) is None)
    assert not unplaced, f"place these modules in LAYERS: {unplaced}"


def test_no_import_runs_up_the_layers():
    bad = upward(import_graph())
    assert not bad, "imports that run up the layers:\n" + "\n".join(bad)


def test_no_module_imports_a_programs_entry():
    """An entry module is its program's alone: what two programs share lives below both."""
    entries = {
        ep.module
        for ep in importlib.metadata.distribution(ROOT).entry_points
        if ep.group == "console_scripts"
    }
    assert entries  # the installed distribution's executables, from pyproject.toml
    bad = [
        f"{i.source} imports {i.target} at {i.where}" for i in import_graph() if i.target in entries
    ]
    assert not bad, "imports of another program's entry module:\n" + "\n".join(bad)


def test_no_modules_import_each_other_in_a_circle():
    found = circles(import_graph())
    assert not found, f"modules that import each other in a circle: {found}"


# The checker itself, on graphs made up for it.
def test_a_lower_layer_importing_a_higher_one_is_found():
    bad = upward([Import("netplug.dns.records", "netplug.cni.netconf", "records.py:18")])
    assert bad == [
        "netplug.dns.records (dns, rank 3) imports netplug.cni.netconf (cni, rank 4) "
        "at records.py:18"
    ]


def test_siblings_importing_each_other_is_found():
    assert upward([Import("netplug.host", "netplug.dns.keys", "host.py:1")])
    assert upward([Import("netplug.net.links", "netplug.ipam.store.base", "links.py:1")])


def test_downward_and_own_group_imports_pass():
    assert not upward(
        [
            Import("netplug.agent.daemon", "netplug.dns.api", "daemon.py:1"),
            Import("netplug.ipam.hosts", "netplug.ipam.store.base", "hosts.py:1"),
            Import("netplug.cni.main", "netplug.cni", "main.py:1"),
        ]
    )


def test_a_circle_is_found_however_long():
    loop = [
        Import("netplug.a", "netplug.b", ""),
        Import("netplug.b", "netplug.c", ""),
        Import("netplug.c", "netplug.a", ""),
        Import("netplug.c", "netplug.d", ""),
    ]
    assert circles(loop) == [["netplug.a", "netplug.b", "netplug.c"]]
    assert circles(loop[:2]) == []


def test_function_local_and_relative_imports_count(tmp_path):
    source = tmp_path / "records.py"
    source.write_text("from . import keys\n\ndef f():\n    from netplug.cni.netconf import x\n")
    known = {"netplug.dns.keys", "netplug.cni.netconf"}
    assert [(i.target, i.where) for i in imports_of("netplug.dns.records", source, known)] == [
        ("netplug.dns.keys", "records.py:1"),
        ("netplug.cni.netconf", "records.py:4"),
    ]
