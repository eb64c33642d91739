"""The chaos harness's command line (docs/reliability.md). Run as root from the repository:

    python -m tests.chaos.net probe                 # what this machine lacks, if anything
    python -m tests.chaos.net up [--preset local]   # five hosts and nodes, in the foreground
    python -m tests.chaos.net status                # runs, hosts, URLs, our nftables rules
    python -m tests.chaos.net fault RUN partition n1,n2,n3/n4,n5
    python -m tests.chaos.net fault RUN bridge n1,n2/n4,n5 n3
    python -m tests.chaos.net fault RUN oneway n1 n2,n3
    python -m tests.chaos.net fault RUN loss 20
    python -m tests.chaos.net fault RUN delay n2 200
    python -m tests.chaos.net signal RUN n2 STOP|CONT|KILL
    python -m tests.chaos.net heal RUN              # remove every network fault and delay
    python -m tests.chaos.net clean                 # remove leftovers of dead runs

RUN is the run's prefix (`dkcXXXX`, printed by `up` and `status`). `up` stays in the
foreground until Ctrl-C or SIGTERM and then removes everything. Each `fault` replaces
the network faults set before it. Restarting a killed node is left to `up`'s owner
(the schedule runner does it); by hand, re-run the node's command from its log folder.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path

from tests.chaos import nemesis as nm
from tests.chaos.netns import (
    STATE_DIR,
    ChaosNet,
    ChaosUnavailable,
    cleanup_leftovers,
    has_netem,
    probe,
)


def _names(text: str) -> tuple[str, ...]:
    return tuple(sorted(part for part in text.split(",") if part))


def parse_fault(words: list[str]) -> nm.Fault:
    """`partition A,B/C,D`, `bridge A,B/C,D X`, `oneway A B,C`, `loss P`, `delay A MS`."""
    usage = ("a fault is one of: partition G1/G2[/G3...], bridge LEFT/RIGHT HOST, "
             "oneway FROM TO, loss PERCENT, delay HOST MS (groups: comma-separated names)")
    if not words:
        raise ValueError(usage)
    kind, args = words[0], words[1:]
    try:
        if kind == "partition" and len(args) == 1 and "/" in args[0]:
            return nm.Partition(tuple(_names(group) for group in args[0].split("/")))
        if kind == "bridge" and len(args) == 2 and args[0].count("/") == 1:
            left, right = args[0].split("/")
            return nm.Bridge(_names(left), _names(right), args[1])
        if kind == "oneway" and len(args) == 2:
            return nm.OneWay(_names(args[0]), _names(args[1]))
        if kind == "loss" and len(args) == 1 and 0 <= int(args[0]) <= 100:
            return nm.Loss(int(args[0]))
        if kind == "delay" and len(args) == 2 and 0 < int(args[1]) <= 60_000:
            return nm.Delay(args[0], int(args[1]))
    except ValueError:
        pass
    raise ValueError(f"bad fault {' '.join(words)!r}; {usage}")


def _check_names(net: ChaosNet, fault: nm.Fault) -> None:
    known = {host.name for host in net.hosts}
    named: set[str] = set()
    match fault:
        case nm.Partition(groups):
            named = {n for group in groups for n in group}
        case nm.Bridge(left, right, bridge):
            named = {*left, *right, bridge}
        case nm.OneWay(sources, targets):
            named = {*sources, *targets}
        case nm.Delay(host, _) | nm.Kill(host) | nm.Pause(host):
            named = {host}
    unknown = sorted(named - known)
    if unknown:
        raise ValueError(f"unknown host(s) {', '.join(unknown)}; hosts: {sorted(known)}")


def cmd_up(args: argparse.Namespace) -> int:
    root = Path(args.root or tempfile.mkdtemp(prefix="dynakv-chaos-"))
    net = ChaosNet(root, size=args.nodes, preset=args.preset)
    stop = threading.Event()
    with net:
        print(f"run {net.prefix}: {len(net.hosts)} nodes up, data and logs in {root}")
        for host in net.hosts:
            print(f"  {host.name}  ns {host.ns}  {host.url}  internode {host.internode}")
        print("Ctrl-C or SIGTERM stops the nodes and removes the namespaces.", flush=True)
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        while not stop.wait(1.0):
            pass
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    records = []
    for path in sorted(STATE_DIR.glob("dkc*.json")):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    if args.json:
        print(json.dumps(records, indent=1))
        return 0
    if not records:
        print("no chaos net running")
    for record in records:
        print(f"run {record['prefix']} (owner pid {record['owner_pid']}, {record['root']})")
        net = ChaosNet.attach(record["prefix"])
        for host in net.hosts:
            print(f"  {host.name}  {host.url}  ns {host.ns}")
            if args.rules:
                print("    " + net.list_rules(host.name).replace("\n", "\n    "))
    return 0


def cmd_fault(args: argparse.Namespace) -> int:
    net = ChaosNet.attach(args.run)
    fault = parse_fault(args.fault)
    _check_names(net, fault)
    nemesis = nm.Nemesis(net)
    nemesis.heal_network()
    print(nemesis.apply(fault))
    return 0


def cmd_heal(args: argparse.Namespace) -> int:
    nemesis = nm.Nemesis(ChaosNet.attach(args.run))
    nemesis.heal_network()
    print("healed: no drop, loss or delay rules left")
    return 0


def cmd_signal(args: argparse.Namespace) -> int:
    record = json.loads((STATE_DIR / f"{args.run}.json").read_text())
    names = [host["name"] for host in record["hosts"]]
    if args.host not in names:
        raise ValueError(f"unknown host {args.host}; hosts: {names}")
    pid = record["node_pids"][names.index(args.host)]
    os.kill(pid, getattr(signal, "SIG" + args.signal))
    print(f"SIG{args.signal} sent to {args.host} (pid {pid})")
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    missing = probe()
    for what in missing:
        print(f"missing: {what}")
    print("netem (tc delay): " + ("yes" if has_netem() else
                                  "no; the delay fault uses a delaying TCP proxy"))
    return 1 if missing else 0


def cmd_clean(args: argparse.Namespace) -> int:
    removed = cleanup_leftovers()
    print(f"removed: {', '.join(removed)}" if removed else "nothing left over")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.net",
                                     description="five dynakv hosts in network namespaces")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("probe", help="what the harness needs that is missing")
    up = sub.add_parser("up", help="start five hosts and nodes, in the foreground")
    up.add_argument("--nodes", type=int, default=5, choices=range(2, 10))
    up.add_argument("--preset", default="local", choices=["local", "lan", "wan"])
    up.add_argument("--root", help="folder for data and logs (default: a new temp folder)")
    status = sub.add_parser("status", help="running chaos nets")
    status.add_argument("--rules", action="store_true", help="also list our nftables rules")
    status.add_argument("--json", action="store_true")
    fault = sub.add_parser("fault", help="replace the network faults of a run")
    fault.add_argument("run")
    fault.add_argument("fault", nargs=argparse.REMAINDER)
    heal = sub.add_parser("heal", help="remove every network fault of a run")
    heal.add_argument("run")
    sig = sub.add_parser("signal", help="send a node SIGSTOP, SIGCONT or SIGKILL")
    sig.add_argument("run")
    sig.add_argument("host")
    sig.add_argument("signal", choices=["STOP", "CONT", "KILL", "TERM"])
    sub.add_parser("clean", help="remove what dead runs left behind")
    args = parser.parse_args(argv)
    commands = {"probe": cmd_probe, "up": cmd_up, "status": cmd_status, "fault": cmd_fault,
                "heal": cmd_heal, "signal": cmd_signal, "clean": cmd_clean}
    if os.geteuid() != 0 and args.command != "probe":
        print("error: the chaos harness needs root (network namespaces, nftables)",
              file=sys.stderr)
        return 2
    try:
        return commands[args.command](args)
    except (ValueError, ChaosUnavailable, KeyError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
