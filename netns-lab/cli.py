"""netns-lab: a netplug cluster built from network namespaces on one Linux box.

netns-lab up --hosts 3 [--store sqlite|etcd]   fabric, hosts, agents
netns-lab run HOST NAME                        a container on HOST
netns-lab exec NAME -- CMD...                  run CMD inside container NAME
netns-lab status                               hosts and containers
netns-lab demo                                 up, 6 containers, ping matrix, down
netns-lab down                                 remove everything the lab made
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from netplug.lab import namespaces
from netplug.lab.demo import demo
from netplug.lab.lab import Lab

STATE_DIR = Path("/run/netplug-lab")


def status(lab: Lab) -> int:
    state = lab.state.load()
    print(f"store: {state['store'] or '(lab is down)'}")
    print(f"{'HOST':8} {'NAMESPACE':16} {'UNDERLAY':14} AGENT")
    agents = {
        p["what"].split("/")[0]: p for p in state["processes"] if p["what"].endswith("netplugd")
    }
    for name, host in state["hosts"].items():
        proc = agents.get(name)
        alive = proc is not None and namespaces.start_time(proc["pid"]) == proc["start"]
        print(
            f"{name:8} {host['netns']:16} {host['address']:14} "
            + (f"running (pid {proc['pid']})" if alive else "not running")
        )
    print(f"\n{'CONTAINER':10} {'HOST':8} ADDRESS")
    for name, container in state["containers"].items():
        print(f"{name:10} {container['host']:8} {container['address']}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="netns-lab", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        default=STATE_DIR,
        help="the lab's state, store and logs (%(default)s)",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = sub.add_parser("up", help="build the fabric and the hosts, start their agents")
    up.add_argument("--hosts", type=int, default=3, help="how many hosts (%(default)s)")
    up.add_argument("--store", choices=["sqlite", "etcd"], default="sqlite")
    run = sub.add_parser("run", help="start a container namespace on a host")
    run.add_argument("host")
    run.add_argument("name")
    ex = sub.add_parser("exec", help="run a command inside a container")
    ex.add_argument("name")
    ex.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    sub.add_parser("status", help="hosts, agents and containers")
    dm = sub.add_parser("demo", help="3 hosts, 2 containers each, ping matrix, teardown")
    dm.add_argument("--store", choices=["sqlite", "etcd"], default="sqlite")
    sub.add_parser("down", help="remove every namespace and process the lab made")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if os.geteuid() != 0:
        print("netns-lab: needs root to create network namespaces (run with sudo)", file=sys.stderr)
        return 1
    lab = Lab(args.state_dir)
    try:
        if args.command == "up":
            lab.up(args.hosts, args.store)
        elif args.command == "run":
            print(lab.run_container(args.host, args.name))
        elif args.command == "exec":
            cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
            os.execvp("ip", ["ip", "netns", "exec", lab.container_netns(args.name), *cmd])
        elif args.command == "status":
            return status(lab)
        elif args.command == "demo":
            return demo(args.state_dir, args.store)
        else:
            lab.down()
    except RuntimeError as e:
        print(f"netns-lab: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
