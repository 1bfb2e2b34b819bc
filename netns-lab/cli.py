"""netns-lab: a netplug cluster built from network namespaces on one Linux box.

netns-lab up --hosts 3 [--store sqlite|etcd]   fabric, hosts, agents
     [--etcd-members 3]                        an etcd cluster (members 192.0.2.2...)
netns-lab network add NAME [--subnet CIDR] [--no-isolate]
                                               one more network on every host
netns-lab run HOST NAME [--network N] [--alias A ...] [--count N]
                                               a container (or NAME-1..NAME-N) on HOST
netns-lab exec NAME -- CMD...                  run CMD inside container NAME
netns-lab ctl ARGS...                          netplugctl against the lab's store
netns-lab policy apply FILE|- (list, show, delete)   = netns-lab ctl policy ...
netns-lab status                               hosts, agents (RSS), networks, containers
netns-lab demo                                 up, containers, pings, DNS, segments, policy, down
netns-lab down                                 remove everything the lab made
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from netplug.lab import namespaces
from netplug.lab.demo import demo
from netplug.lab.lab import Lab, networks

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
        rss = namespaces.rss_kib(proc["pid"]) if alive else None
        print(
            f"{name:8} {host['netns']:16} {host['address']:14} "
            + (f"running (pid {proc['pid']}, RSS {rss / 1024:.1f} MiB)" if rss else "not running")
        )
    if state["hosts"]:
        print(f"\n{'NETWORK':10} {'SUBNET':16} ISOLATED")
        for name, spec in networks(state).items():
            print(f"{name:10} {spec['subnet']:16} {'yes' if spec['isolate'] else 'no'}")
    print(f"\n{'CONTAINER':10} {'HOST':8} {'NETWORK':10} ADDRESS")
    for name, container in state["containers"].items():
        network = container.get("network", "lab")
        print(f"{name:10} {container['host']:8} {network:10} {container['address']}")
    return 0


def run_containers(lab: Lab, args: argparse.Namespace) -> int:
    """``run``: one container (its address on stdout), or NAME-1..NAME-N with --count
    (progress and a summary of the failures on stderr; non-zero if any failed)."""
    if args.count is None:
        print(lab.run_container(args.host, args.name, args.network, args.alias))
        return 0
    if args.count < 1 or args.parallel < 1:
        raise RuntimeError("--count and --parallel must be at least 1")
    names = [f"{args.name}-{i}" for i in range(1, args.count + 1)]
    suffix = {name: name[len(args.name) :] for name in names}  # "-7"
    started, failed = lab.run_containers(
        args.host,
        names,
        args.network,
        lambda name: [alias + suffix[name] for alias in args.alias],
        args.parallel,
    )
    for name in names:
        if name in started:
            print(f"{name} {started[name]}")
    if failed:
        print(f"netns-lab: {len(failed)} of {len(names)} containers failed:", file=sys.stderr)
        for name, error in sorted(failed.items()):
            print(f"  {name}: {error.splitlines()[0][:300]}", file=sys.stderr)
        return 1
    return 0


def ctl(lab: Lab, argv: list[str]) -> None:
    """Replace this process with netplugctl, run from the first host's namespace (etcd
    is only reachable inside the lab) with the lab's store and that host's name."""
    os.execvp("ip", lab.netplugctl(None, *argv))


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
    p.add_argument(
        "--prefix",
        default=namespaces.PREFIX,
        help="of every namespace the lab makes (%(default)s); one per lab",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = sub.add_parser("up", help="build the fabric and the hosts, start their agents")
    up.add_argument("--hosts", type=int, default=3, help="how many hosts (%(default)s)")
    up.add_argument("--store", choices=["sqlite", "etcd"], default="sqlite")
    up.add_argument("--parallel", type=int, default=4, help="hosts started at once (%(default)s)")
    net = sub.add_parser("network", help="add a network to every host")
    net_sub = net.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = net_sub.add_parser("add", help="one more conflist on every host")
    add.add_argument("network_name", metavar="NAME")
    add.add_argument("--subnet", help="IPv4 CIDR (default: the next free 10.x.0.0/16)")
    add.add_argument("--no-isolate", dest="isolate", action="store_false", help='"isolate": false')
    up.add_argument(
        "--etcd-members",
        type=int,
        choices=range(1, 8),
        default=1,
        metavar="N",
        help="etcd cluster members with --store etcd, 1 to 7 (%(default)s)",
    )
    run = sub.add_parser("run", help="start a container namespace on a host")
    run.add_argument("host")
    run.add_argument("name")
    run.add_argument("--network", default="lab", help="(%(default)s)")
    run.add_argument("--alias", action="append", default=[], help="another DNS name (repeatable)")
    run.add_argument("--count", type=int, help="start NAME-1..NAME-N (aliases get the same suffix)")
    run.add_argument(
        "--parallel", type=int, default=4, help="ADDs at once with --count (%(default)s)"
    )
    ex = sub.add_parser("exec", help="run a command inside a container")
    ex.add_argument("name")
    ex.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    for name, what in (("ctl", "netplugctl ARGS"), ("policy", "netplugctl policy ARGS")):
        c = sub.add_parser(name, help=f"{what}, with the lab's store, from host1")
        c.add_argument("args", nargs=argparse.REMAINDER)
    sub.add_parser("status", help="hosts, agents, networks and containers")
    dm = sub.add_parser("demo", help="3 hosts: ping matrix, DNS, segmentation, a policy; teardown")
    dm.add_argument("--store", choices=["sqlite", "etcd"], default="sqlite")
    sub.add_parser("down", help="remove every namespace and process the lab made")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if os.geteuid() != 0:
        print("netns-lab: needs root to create network namespaces (run with sudo)", file=sys.stderr)
        return 1
    # run's stdout is its containers' addresses: its progress goes to stderr.
    say = (
        (lambda text: print(text, file=sys.stderr, flush=True)) if args.command == "run" else print
    )
    lab = Lab(args.state_dir, say, args.prefix)
    try:
        if args.command == "up":
            lab.etcd_members = args.etcd_members
            lab.up(args.hosts, args.store, args.parallel)
        elif args.command == "network":
            lab.add_network(args.network_name, args.subnet, args.isolate)
        elif args.command == "run":
            return run_containers(lab, args)
        elif args.command == "exec":
            cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
            os.execvp("ip", ["ip", "netns", "exec", lab.container_netns(args.name), *cmd])
        elif args.command in ("ctl", "policy"):
            ctl(lab, ["policy", *args.args] if args.command == "policy" else args.args)
        elif args.command == "status":
            return status(lab)
        elif args.command == "demo":
            return demo(args.state_dir, args.store, args.prefix)
        else:
            lab.down()
    except RuntimeError as e:
        print(f"netns-lab: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
