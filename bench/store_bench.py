"""Allocation throughput of the SQLite store: create-if-absent transactions per second.

Runs the same workload with 1 process and with N processes (16 by default) on
one shared database in a temporary directory, which it removes afterwards.
Each transaction is what IPAM does to take an address: put a random key
under ``alloc/`` only if it does not exist yet.

    .venv/bin/python bench/store_bench.py [--txns 20000] [--processes 16]
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier

from netplug.ipam.store.base import Compare, Put
from netplug.ipam.store.sqlite import SQLiteStore


@dataclass(frozen=True)
class Run:
    processes: int
    txns: int
    created: int
    seconds: float


def worker(
    path: str, txns: int, keys: int, deadline: float, barrier: Barrier, results: Queue
) -> None:
    """Create-if-absent ``txns`` random keys (or until ``deadline``); puts
    (attempted, created, started, finished) on ``results``, with monotonic
    times, which Linux keeps system-wide."""
    store = SQLiteStore(path)
    store.status()  # open the connection before the clock starts
    barrier.wait(timeout=60)
    started = time.monotonic()
    attempted = created = 0
    while attempted < txns and time.monotonic() < deadline:
        key = f"alloc/{random.randrange(keys)}"
        created += store.txn([Compare.absent(key)], [Put(key, b"owner")]).succeeded
        attempted += 1
    finished = time.monotonic()
    store.close()
    results.put((attempted, created, started, finished))


def run(path: str, processes: int, txns: int, keys: int, max_seconds: float) -> Run:
    """Share ``txns`` between ``processes`` workers on the database at ``path``."""
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(processes), ctx.Queue()
    deadline = time.monotonic() + max_seconds
    # A Barrier passes to workers only at start, hence Process rather than Pool.
    workers = [
        ctx.Process(target=worker, args=(path, txns // processes, keys, deadline, barrier, queue))
        for _ in range(processes)
    ]
    for p in workers:
        p.start()
    try:
        results = [queue.get(timeout=max_seconds + 60) for _ in workers]
    finally:
        for p in workers:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
    seconds = max(r[3] for r in results) - min(r[2] for r in results)
    return Run(processes, sum(r[0] for r in results), sum(r[1] for r in results), seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--txns",
        type=int,
        default=20000,
        help="transactions per run, shared by its processes (default 20000)",
    )
    parser.add_argument(
        "--processes", type=int, default=16, help="processes of the concurrent run (default 16)"
    )
    parser.add_argument(
        "--keys", type=int, default=1_000_000, help="size of the random key space (default 1000000)"
    )
    parser.add_argument(
        "--max-seconds", type=float, default=30.0, help="stop a run after this long (default 30)"
    )
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="netplug-bench-")
    try:
        for processes in (1, args.processes):
            path = f"{tmp}/store-{processes}.db"
            result = run(path, processes, args.txns, args.keys, args.max_seconds)
            print(
                f"{result.processes:3d} process(es): {result.txns} txns, "
                f"{result.created} allocations in {result.seconds:.2f} s = "
                f"{result.created / result.seconds:,.0f} allocations/s, "
                f"{result.txns / result.seconds:,.0f} txns/s"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
