"""What the namespace benchmarks (cni, overlay, dns) share: what a run owns, its removal.

A run owns network namespaces named ``npb-<random>-...``, the processes it
started (stopped by PID, never by name), netns-lab labs and temporary
directories. ``Owned.release`` removes all of them, and ``run_guarded`` makes
sure it runs: in ``finally``, also on Ctrl-C or SIGTERM, with both signals held
off until it is done. Also here: progress lines on stderr and the nearest-rank
quantile the scripts report, and the command line and report shapes the
namespace benchmarks share (``bench_parser``, ``needs_root``, ``report``).

The scripts import it as a sibling module: ``python bench/X.py`` puts
``bench/`` first on ``sys.path``; it puts ``tests/`` there too, for the test
helpers the benchmarks share (``processes.stop``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dnslib import QR, RCODE, DNSError, DNSHeader, DNSRecord
from dnslib.label import DNSBuffer

from netplug.lab import namespaces
from netplug.lab.lab import Lab

# tests/processes.py: the one "stop what we started" helper, shared with the tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from processes import stop

PREFIX = "npb-"  # every namespace a benchmark makes starts with it
STOP_TIMEOUT = 5.0

Say = Callable[[str], None]


def stamped_printer(width: int) -> Say:
    """A ``say``: a line on stderr, stamped with the seconds since this call
    (``width`` characters wide, as each script has printed them)."""
    started = time.monotonic()

    def say(text: str) -> None:
        print(f"[{time.monotonic() - started:{width}.1f}s] {text}", file=sys.stderr, flush=True)

    return say


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile (p99 of up to 100 samples is the largest)."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * q)) - 1]


# -- processes and signals -----------------------------------------------------


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_guarded(body: Callable[[], None], cleanup: Callable[[], None], say: Say) -> bool:
    """Run ``body``, then ``cleanup`` whatever happens; False when Ctrl-C or SIGTERM
    (made to raise KeyboardInterrupt, as Ctrl-C does) cut the body short. Any other
    error propagates once the cleanup is done. Both signals are ignored while the
    cleanup runs, so that it finishes, and handled as before afterwards."""
    sigterm = signal.signal(signal.SIGTERM, _interrupt)
    try:
        body()
    except KeyboardInterrupt:
        say("interrupted: cleaning up")
        return False
    finally:
        sigint = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            cleanup()
        finally:
            signal.signal(signal.SIGINT, sigint)
            signal.signal(signal.SIGTERM, sigterm)
    return True


# -- command line and report ---------------------------------------------------


def bench_parser(doc: str, needs: str, parts: Sequence[str] = ()) -> argparse.ArgumentParser:
    """A bench's parser: its docstring's first paragraph, what it ``needs`` (a
    phrase: "root and ping"), and with ``parts`` an ``--only`` to pick some of them
    (None when not given: the script takes them all)."""
    parser = argparse.ArgumentParser(
        description=doc.split("\n\n")[0],
        epilog=f"Needs {needs}. Namespaces are named {PREFIX}<random>-...; "
        "the Markdown table goes to stdout, progress to stderr.",
    )
    if parts:
        parser.add_argument(
            "--only",
            action="append",
            choices=parts,
            help="run only this part (repeatable; default: all)",
        )
    return parser


def needs_root(script: str) -> bool:
    """Whether this runs as root; else says why ``script`` cannot run (exit 2)."""
    if os.geteuid() == 0:
        return True
    print(f"{script}: needs root (network namespaces)", file=sys.stderr)
    return False


def report(
    lines: Iterable[str], machine: str, script: str, json_file: str | None, results: Any
) -> int:
    """Print the Markdown table and the line saying what it was measured on (a
    bench's stdout); write ``results`` to ``json_file`` when given. Returns 0."""
    print("\n".join(lines))
    print(f"\nMeasured on {machine} (`bench/{script}`).")
    if json_file:
        Path(json_file).write_text(json.dumps(results, indent=2, default=str))
    return 0


# -- what a run owns -----------------------------------------------------------


def describe_machine(tools: str, noisy_load: float, say: Say) -> str:
    """One line on what the numbers were measured on (``tools``: the versions that
    matter to this bench); warns when the load average is above ``noisy_load``."""
    load = os.getloadavg()[0]
    if load > noisy_load:
        say(f"warning: load average {load:.1f} on {os.cpu_count()} CPUs: expect noisy numbers")
    return (
        f"{os.cpu_count()} CPUs, Linux {platform.release()}, {tools}, "
        f"load average {load:.1f} at the start, {time.strftime('%Y-%m-%d')}"
    )


def new_tag() -> str:
    """A run's own namespace prefix: ``npb-`` and six random hex digits."""
    return f"{PREFIX}{uuid.uuid4().hex[:6]}-"


@dataclass
class Owned:
    """What this run made: namespaces, processes, labs and directories, all removed
    by ``release``. A process that forked away from us (aardvark-dns) is kept by
    PID and start time, so that only that very process is ever signalled."""

    say: Say
    tag: str = field(default_factory=new_tag)  # every namespace of this run starts with it
    procs: list[subprocess.Popen] = field(default_factory=list)
    detached: list[tuple[int, str]] = field(default_factory=list)
    labs: list[Lab] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)

    def tempdir(self, name: str) -> Path:
        path = tempfile.mkdtemp(prefix=f"{self.tag}{name}-")
        self.dirs.append(path)
        return Path(path)

    def namespace(self, name: str) -> str:
        return namespaces.create(f"{self.tag}{name}")

    def lab(self, name: str) -> Lab:
        state = self.tempdir(name)
        lab = Lab(
            state / "lab",
            say=lambda text: self.say(f"  lab: {text}"),
            prefix=f"{self.tag}{name}-",
        )
        self.labs.append(lab)
        return lab

    def drop_lab(self, lab: Lab) -> None:
        """Take ``lab`` down; forgotten only once that worked, so that ``release``
        tries again after a failure."""
        lab.down()
        with contextlib.suppress(ValueError):
            self.labs.remove(lab)

    def spawn(
        self, argv: list[str], log: Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        """Start ``argv``, its output appended to ``log`` or else on a pipe for the
        caller to read. In a session of its own: Ctrl-C reaches us only, and we stop
        it ourselves."""
        with open(log, "ab") if log else contextlib.nullcontext(subprocess.PIPE) as sink:
            proc = subprocess.Popen(
                argv,
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def adopt(self, pid: int) -> None:
        """Own ``pid``, a process that forked away from one we started."""
        started = namespaces.start_time(pid)
        if started is not None:
            self.detached.append((pid, started))

    def stop(self, proc: subprocess.Popen) -> None:
        """Stop ``proc`` (which we started) by its PID, and forget it."""
        stop(proc, timeout=STOP_TIMEOUT)
        if proc.stdout:
            proc.stdout.close()
        with contextlib.suppress(ValueError):
            self.procs.remove(proc)

    def release(self) -> None:
        for proc in list(self.procs):
            with contextlib.suppress(Exception):
                self.stop(proc)
        for pid, started in list(self.detached):
            with contextlib.suppress(Exception):
                namespaces.stop(pid, started, timeout=STOP_TIMEOUT)
        self.detached.clear()
        for lab in list(self.labs):
            try:
                self.drop_lab(lab)
            except Exception as e:  # keep going: the sweep below still runs
                self.say(f"lab down failed: {e}")
        for netns in namespaces.lab_namespaces(self.tag):
            namespaces.delete(netns)
            self.say(f"removed namespace {netns}")
        for directory in self.dirs:
            shutil.rmtree(directory, ignore_errors=True)


def dns_query(qname: str, qid: int) -> bytes:
    """An A query for ``qname`` with id ``qid``, packed by dnslib."""
    query = DNSRecord.question(qname)
    query.header.id = qid
    return query.pack()


def dns_answered(reply: bytes, qid: int) -> bool:
    """Whether ``reply`` answers query ``qid`` with a record (NOERROR, ANCOUNT > 0).
    Only the header is parsed (a probe loop's hot path: a few us, where the whole
    message would take ten times that)."""
    try:
        header = DNSHeader.parse(DNSBuffer(reply))
    except DNSError:  # shorter than a header
        return False
    response = header.id == qid and header.qr == QR.RESPONSE
    return response and header.rcode == RCODE.NOERROR and header.a > 0
