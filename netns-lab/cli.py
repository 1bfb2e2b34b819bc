"""``netns-lab``: a netplug cluster from network namespaces on one Linux box."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from netplug.lab import namespaces
from netplug.lab.demo import demo

STATE_DIR = Path("/run/netplug-lab")


def down(state_dir: Path) -> int:
    """Remove everything the lab made, also after a crash: its processes, its namespaces."""
    for what in namespaces.State(state_dir).kill_all():
        print(f"stopped {what}")
    for name in namespaces.lab_namespaces():
        namespaces.delete(name)
        print(f"removed namespace {name}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="netns-lab", description=__doc__.split(":")[1].strip())
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=STATE_DIR,
        help="where the lab records its processes (%(default)s)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("demo", help="one host, two containers, ping, teardown (embedded SQLite store)")
    sub.add_parser("down", help="remove every namespace and process the lab made")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("netns-lab: needs root to create network namespaces (run with sudo)", file=sys.stderr)
        return 1
    try:
        return demo(args.state_dir) if args.command == "demo" else down(args.state_dir)
    except RuntimeError as e:
        print(f"netns-lab: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
