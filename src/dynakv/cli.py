"""The `dynakv` command: run nodes, a local dev cluster, quick key/value use, admin.

    dynakv node ...            one node (options in docs/operations.md)
    dynakv dev [--nodes 3]     a local cluster in the foreground
    dynakv get|put|delete ...  quick key/value use ($DYNAKV_URL or --url)
    dynakv admin status|plan|commit|join|leave|remove|ring|transfers|local-get ...
                               cluster changes and views (docs/operations.md)
    dynakv bench --url URL --workload A|B|C|W   load, latency percentiles, siblings
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from dynakv.config import PRESETS, preset

DEFAULT_URL = "http://127.0.0.1:8098"


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit status 2."""


def parse_address(text: str, what: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"{what}: expected HOST:PORT, got {text!r}")
    return host, int(port)


def parse_peer(text: str) -> Any:
    from dynakv.net.server import PeerSpec

    name, sep, rest = text.partition("=")
    if not sep or not name:
        raise UsageError(f"--peer: expected NAME=HOST:PORT[/WEIGHT[/ZONE]], got {text!r}")
    address, *extra = rest.split("/")
    host, port = parse_address(address, "--peer")
    weight = 1
    if extra:
        if not extra[0].isdigit() or int(extra[0]) < 1:
            raise UsageError(f"--peer {text}: weight must be a positive integer")
        weight = int(extra[0])
    zone = extra[1] if len(extra) > 1 else ""
    return PeerSpec(name, host, port, weight, zone)


# --- dynakv node -------------------------------------------------------------------


def add_node_parser(commands: Any) -> None:
    p = commands.add_parser("node", help="run one node in the foreground")
    p.add_argument("--name", required=True, help="this node's name, unique in the cluster")
    p.add_argument("--cluster", default="dynakv", help="the cluster's name (default dynakv)")
    p.add_argument("--http", default="127.0.0.1:8098", help="HTTP API address HOST:PORT")
    p.add_argument("--pb", default="127.0.0.1:8087",
                   help="PB API (Riak's Protocol Buffers protocol) address HOST:PORT, or off")
    p.add_argument("--internode", default="127.0.0.1:8100", help="internode address HOST:PORT")
    p.add_argument("--data", required=True, help="data directory (created if missing)")
    p.add_argument("--peer", action="append", default=[], metavar="NAME=HOST:PORT[/WEIGHT[/ZONE]]",
                   help="another member and its internode address (repeat for each)")
    p.add_argument("--weight", type=int, default=1, help="share of partitions (default 1)")
    p.add_argument("--zone", default="", help="failure zone (rack, availability zone)")
    p.add_argument("--ring-size", type=int, default=None,
                   help="partitions, a power of two (used only at creation; default 64)")
    p.add_argument("--preset", default="lan", choices=sorted(PRESETS), help="timing preset")
    p.add_argument("--hinted-handoff", default="on", choices=["on", "off"],
                   help="sloppy quorum with hinted handoff (default on)")
    p.add_argument("--anti-entropy", default="on", choices=["on", "off"],
                   help="Merkle-tree exchanges between replicas (default on; off leaves "
                        "repair to read repair and hinted handoff)")
    p.add_argument("--early-replication", default="on", choices=["on", "off"],
                   help="send a write to the other replicas while the coordinator's own "
                        "copy syncs (default on; docs/architecture.md)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(run=run_node_command)


def run_node_command(args: argparse.Namespace) -> int:
    from dynakv.core.ring import is_power_of_two
    from dynakv.net.server import NodeOptions, run_node

    logging.basicConfig(level=args.log_level.upper(),
                        format=f"%(asctime)s {args.name} %(levelname)s %(name)s: %(message)s")
    config = preset(args.preset).with_options(
        cluster_name=args.cluster, hinted_handoff_enabled=args.hinted_handoff == "on",
        early_replication=args.early_replication == "on",
        anti_entropy_enabled=args.anti_entropy == "on")
    if args.ring_size is not None:
        if not is_power_of_two(args.ring_size) or args.ring_size > 65536:
            raise UsageError("--ring-size must be a power of two up to 65536")
        config = config.with_options(ring_size=args.ring_size)
    if args.weight < 1:
        raise UsageError("--weight must be a positive integer")
    peers = tuple(parse_peer(text) for text in args.peer)
    names = [args.name, *(peer.name for peer in peers)]
    if len(set(names)) != len(names):
        raise UsageError("every member needs a distinct name")
    options = NodeOptions(
        name=args.name,
        data=Path(args.data).resolve(),
        http=parse_address(args.http, "--http"),
        internode=parse_address(args.internode, "--internode"),
        config=config,
        peers=peers,
        weight=args.weight,
        zone=args.zone,
        pb=parse_address(args.pb, "--pb") if args.pb and args.pb != "off" else None,
    )
    run_node(options)
    return 0


# --- dynakv get / put / delete -----------------------------------------------------


def add_kv_parsers(commands: Any) -> None:
    for name, helptext in (("get", "read a key"), ("put", "write a key"),
                           ("delete", "delete a key")):
        p = commands.add_parser(name, help=helptext)
        p.add_argument("--url", default=os.environ.get("DYNAKV_URL", DEFAULT_URL))
        p.add_argument("--type", default="default", help="bucket type")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.add_argument("bucket")
        p.add_argument("key")
        if name == "put":
            p.add_argument("value", help="the value, or - to read standard input")
            p.add_argument("--content-type", default="text/plain")
        if name in ("put", "delete"):
            p.add_argument("--context", default=None, help="the context (base64) from a read")
        p.set_defaults(run=run_kv_command, command=name)


def run_kv_command(args: argparse.Namespace) -> int:
    from dynakv.client import Client

    client = Client(args.url)
    context = base64.b64decode(args.context) if getattr(args, "context", None) else None
    if args.command == "get":
        obj = client.get(args.bucket, args.key, bucket_type=args.type)
        print_object(obj, args.json)
        return 0 if obj.exists else 1
    if args.command == "put":
        value = sys.stdin.buffer.read() if args.value == "-" else args.value.encode()
        stored = client.put(args.bucket, args.key, value, bucket_type=args.type,
                            context=context, content_type=args.content_type, return_body=True)
        if stored is not None:
            print_object(stored, args.json)
        return 0
    client.delete(args.bucket, args.key, bucket_type=args.type, context=context)
    return 0


def print_object(obj: Any, as_json: bool) -> None:
    context = base64.b64encode(obj.context).decode() if obj.context else None
    if as_json:
        print(json.dumps({
            "exists": obj.exists,
            "deleted": obj.deleted,
            "context": context,
            "siblings": [{"value": s.value.decode("utf-8", "replace"),
                          "content_type": s.content_type, "vtag": s.vtag}
                         for s in obj.siblings],
        }, indent=2))
        return
    if not obj.exists:
        print("deleted" if obj.deleted else "not found", file=sys.stderr)
    for index, sibling in enumerate(obj.siblings):
        if len(obj.siblings) > 1:
            print(f"--- sibling {index + 1} of {len(obj.siblings)} (vtag {sibling.vtag})")
        print(sibling.value.decode("utf-8", "replace"))
    if context:
        print(f"context: {context}", file=sys.stderr)


# --- dynakv admin --------------------------------------------------------------------


def add_admin_parser(commands: Any) -> None:
    admin = commands.add_parser("admin", help="operator commands; talk to any node")
    sub = admin.add_subparsers(dest="admin_command", required=True)
    status = sub.add_parser("status", help="this node's view of the cluster")
    local = sub.add_parser("local-get", help="the siblings one node holds for a key")
    local.add_argument("--type", default="default", help="bucket type")
    local.add_argument("bucket")
    local.add_argument("key")
    join = sub.add_parser("join", help="stage the join of --node to the cluster of SEED")
    join.add_argument("seed", help="the HTTP URL of any member of the cluster to join")
    leave = sub.add_parser("leave", help="stage the departure of --node (it hands its "
                           "data off to the new owners)")
    remove = sub.add_parser("remove", help="stage the removal of a dead member (nothing "
                            "handed off; its replicas are rebuilt from the other copies)")
    remove.add_argument("member", help="the member's name")
    remove.add_argument("--force", action="store_true",
                        help="remove it even if --node sees it up")
    plan = sub.add_parser("plan", help="the staged changes and the partitions that would move")
    commit = sub.add_parser("commit", help="apply the plan (done by the cluster's claimant)")
    ring = sub.add_parser("ring", help="the ring: the first owner of each partition")
    transfers = sub.add_parser("transfers", help="partitions streaming to new owners")
    for p in (join, leave, remove, plan, commit, ring):
        p.set_defaults(run=run_admin_membership)
    transfers.set_defaults(run=run_admin_transfers)
    for p in (status, local, join, leave, remove, plan, commit, ring, transfers):
        p.add_argument("--node", default=os.environ.get("DYNAKV_URL", DEFAULT_URL),
                       help="the node's HTTP URL")
        p.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(run=run_admin_status)
    local.set_defaults(run=run_admin_local_get)


def http_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        message = error.read().decode("utf-8", "replace").strip()
        raise UsageError(f"{url}: {error.code} {message}") from error
    except (urllib.error.URLError, OSError) as error:
        raise UsageError(f"{url}: cannot reach the node ({error})") from error


def http_post_json(url: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30):
            return
    except urllib.error.HTTPError as error:
        message = error.read().decode("utf-8", "replace").strip()
        raise UsageError(f"{url}: {error.code} {message}") from error
    except (urllib.error.URLError, OSError) as error:
        raise UsageError(f"{url}: cannot reach the node ({error})") from error


def run_admin_membership(args: argparse.Namespace) -> int:
    node = args.node.rstrip("/")
    command = args.admin_command
    if command == "join":
        status = http_json(node + "/admin/status")
        me = next(m for m in status["members"] if m["name"] == status["node"])
        http_post_json(args.seed.rstrip("/") + "/admin/join", {
            "name": me["name"], "address": me["address"], "weight": me["weight"],
            "zone": me["zone"]})
        print(f"staged: {me['name']} joins the cluster of {args.seed}; "
              "see `dynakv admin plan`, then `dynakv admin commit`")
    elif command == "leave":
        name = http_json(node + "/admin/status")["node"]
        http_post_json(node + "/admin/leave", {"node": name})
        print(f"staged: {name} leaves (it hands its data off); see `dynakv admin plan`, "
              "then `dynakv admin commit`")
    elif command == "remove":
        http_post_json(node + "/admin/remove", {"node": args.member, "force": args.force})
        print(f"staged: {args.member} is removed (nothing handed off); see `dynakv admin "
              "plan`, then `dynakv admin commit`")
    elif command == "plan":
        print_plan(http_json(node + "/admin/plan"), args.json)
    elif command == "commit":
        plan = http_json(node + "/admin/plan")
        if not plan["staged"] and not plan["moves"]:
            raise UsageError("nothing is staged: there is no plan to commit")
        http_post_json(node + "/admin/commit", {"ring_version": plan["ring_version"],
                                                "owners": plan["owners"]})
        print(f"committed: {len(plan['moves'])} partition(s) move; ring version "
              f"{plan['ring_version'] + 1}")
    else:
        ring = http_json(node + "/admin/ring")
        if args.json:
            print(json.dumps({"ring_size": ring["ring_size"], "owners": ring["owners"]},
                             indent=2))
            return 0
        counts: dict[str, int] = {}
        for entry in ring["owners"]:
            counts[entry["node"]] = counts.get(entry["node"], 0) + 1
        print(f"ring of {ring['ring_size']} partitions, version {ring['ring_version']}")
        for name, count in sorted(counts.items()):
            print(f"  {name:<20} {count:>6} partitions ({100 * count / ring['ring_size']:.1f}%)")
    return 0


def run_admin_transfers(args: argparse.Namespace) -> int:
    """The transfers of every member (each node streams the partitions it gave up)."""
    status = http_json(args.node.rstrip("/") + "/admin/transfers")
    transfers: list[dict[str, Any]] = status.get("transfers", [])
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    pending = {node: count for node, count in status.get("pending", {}).items() if count}
    if not transfers and not pending:
        print("no transfer pending or running")
    for node, count in sorted(pending.items()):
        print(f"{node}: {count} partition(s) waiting for a transfer slot")
    for node in status.get("nodes_missing", []):
        print(f"{node}: did not answer (down?); its transfers are not shown")
    for transfer in transfers:
        total = transfer["keys_total"]
        done = transfer["keys_done"]
        width = 30
        filled = min(width, width * done // total) if total else 0
        bar = "#" * filled + "." * (width - filled)
        print(f"partition {transfer['partition']:>5} {transfer['from']} -> "
              f"{','.join(transfer['to'])} [{bar}] {done}/{total if total else '?'} keys, "
              f"{transfer['bytes_done']} bytes, {transfer['keys_per_s']} keys/s")
    return 0


def print_plan(plan: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(plan, indent=2))
        return
    print(f"plan against ring version {plan['ring_version']} (claimant {plan['claimant']})")
    for change in plan["staged"]:
        note = ("; removed without handoff: its replicas are rebuilt from the other copies"
                if change["status"] == "removing" else "")
        print(f"  {change['status']:<8} {change['name']} (weight {change['weight']}{note})")
    moves: dict[tuple[str, str], int] = {}
    keys = 0
    for move in plan["moves"]:
        moves[(move["from"], move["to"])] = moves.get((move["from"], move["to"]), 0) + 1
        keys += move["keys_here"] or 0
    print(f"{len(plan['moves'])} partition(s) would move"
          + (f" (about {keys} keys held by this node)" if keys else ""))
    for (source, target), count in sorted(moves.items()):
        print(f"  {source} -> {target}: {count}")


def run_admin_status(args: argparse.Namespace) -> int:
    status = http_json(args.node.rstrip("/") + "/admin/status")
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    print(f"node {status['node']} (server id {status['server_id']}), "
          f"cluster {status['cluster_name']}, ring of {status['ring_size']} partitions")
    print(f"{'member':<20} {'status':<9} {'up':<6} {'partitions':>10} {'weight':>6}  zone")
    for member in status["members"]:
        print(f"{member['name']:<20} {member.get('status', ''):<9} "
              f"{('up' if member['up'] else 'DOWN'):<6} {member['partitions']:>10} "
              f"{member.get('weight', 1):>6}  {member.get('zone', '')}")
    print(f"requests in flight: {status['requests_in_flight']}")
    pauses = status.get("failure_detector", {}).get("local_pauses", 0)
    print(f"failure detector: {pauses} check(s) skipped after a pause of this node")
    hints = status.get("hints", {})
    queued = hints.get("queued", {})
    print(f"hinted handoff: {'on' if status.get('hinted_handoff_enabled') else 'off'}; "
          f"hints delivered {hints.get('delivered', 0)}, refused {hints.get('refused', 0)}")
    for target, count in queued.items():
        print(f"  hints queued for {target}: {count}")
    ae = status.get("anti_entropy", {})
    if ae:
        print(f"anti-entropy: {ae['trees_built']} of {ae['trees_total']} trees built, "
              f"{ae['exchanges_done']} exchanges done ({ae['exchanges_failed']} failed), "
              f"{ae['keys_repaired']} keys repaired")
        last = ae.get("last_exchange_ms", {})
        if last:
            newest = max(last.values())
            print(f"  last exchange: partition {max(last, key=lambda p: last[p])} "
                  f"at {newest} ms; {len(last)} partitions exchanged so far")
    tombstones = status.get("tombstones", {})
    if tombstones:
        print(f"tombstones reaped: {tombstones['reaped']}")
    for name, value in status.get("counters", {}).items():
        print(f"  {name}: {value}")
    return 0


def run_admin_local_get(args: argparse.Namespace) -> int:
    path = "/admin/local/types/{}/buckets/{}/keys/{}".format(
        *(urllib.parse.quote(part, safe="") for part in (args.type, args.bucket, args.key)))
    data = http_json(args.node.rstrip("/") + path)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    siblings = data.get("siblings", [])
    print(f"node {data['node']}, partition {data['partition']}: {len(siblings)} sibling(s)")
    for sibling in siblings:
        state = "tombstone" if sibling.get("deleted") else repr(sibling.get("value"))
        print(f"  dot {sibling.get('dot')} vtag {sibling.get('vtag')}: {state}")
    return 0 if siblings else 1


# --- main ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dynakv", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command_name", required=True)
    add_node_parser(commands)
    from dynakv.devcluster import add_dev_parser

    add_dev_parser(commands)
    add_kv_parsers(commands)
    add_admin_parser(commands)
    from dynakv.bench.command import add_bench_parser

    add_bench_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.run(args)
        return result
    except UsageError as error:
        print(f"dynakv: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        from dynakv.storage.datadir import DataDirError

        known: tuple[type[Exception], ...] = (DataDirError, OSError, ValueError)
        try:
            from dynakv.client import DynakvClientError

            known = (*known, DynakvClientError)
        except ImportError:
            pass
        if isinstance(error, known):
            print(f"dynakv: {error}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
