"""One change at a time: a fresh three-node dynakv cluster, one workload, its
throughput and each node's commit path (from the nodes' /stats).

    python bench/commits.py --workload A --concurrency 50 --duration 8 --runs 3
    python bench/commits.py --node-arg=--early-replication --node-arg=off

Run it on two checkouts (each with its own virtual environment) alternately and
compare the medians: the figures of docs/performance.md's "What changed" come from it.
Per node: commits per second, writes per commit, ms per commit from hand-off to the
writer until the event loop has it back (and the part of it in the storage
transaction and its sync), and how busy the commit path was.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from services import dynakv_cluster


def stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/stats", timeout=5) as response:
        data: dict[str, Any] = json.loads(response.read())
    return data


def one_run(args: argparse.Namespace) -> float:
    with tempfile.TemporaryDirectory() as root, \
            dynakv_cluster(Path(root), "pb", tuple(args.node_arg)) as service:
        http = [f"http://{argv[argv.index('--http') + 1]}" for argv in service.argvs]
        argv = [sys.executable, "-m", "dynakv", "bench", "--json", "--quiet",
                "--workload", args.workload, "--concurrency", str(args.concurrency),
                "--keys", str(args.keys), *(a for url in service.urls for a in ("--url", url))]
        subprocess.run([*argv, "--duration", "1", "--warmup", "0"], check=True,
                       capture_output=True)  # loads the keys
        before = [stats(url) for url in http]
        started = time.monotonic()
        out = subprocess.run([*argv, "--no-load", "--duration", str(args.duration),
                              "--warmup", "0"], check=True, capture_output=True,
                             text=True).stdout
        elapsed = time.monotonic() - started
        after = [stats(url) for url in http]
    report = json.loads(out)
    print(f"ops/s {report['ops_per_s']:.0f}  p50 {report['p50_ms']} ms  "
          f"p99 {report['p99_ms']} ms")
    for name, b, a in zip(("n1", "n2", "n3"), before, after, strict=True):
        commits = a["storage_commits"] - b["storage_commits"]
        writes = a["storage_committed_writes"] - b["storage_committed_writes"]
        commit_s = a["storage_commit_seconds"] - b["storage_commit_seconds"]
        write_s = a["storage_write_seconds"] - b["storage_write_seconds"]
        per = max(commits, 1)
        print(f"  {name}: commits/s {commits / elapsed:.0f}  writes/commit {writes / per:.1f}"
              f"  commit {1000 * commit_s / per:.2f} ms (storage {1000 * write_s / per:.2f})"
              f"  busy {commit_s / elapsed:.0%}")
    return float(report["ops_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", default="A", choices=("A", "B", "C", "W"))
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--node-arg", action="append", default=[],
                        help="an argument for every dynakv node (repeat)")
    args = parser.parse_args()
    results = [one_run(args) for _ in range(args.runs)]
    if len(results) > 1:
        print(f"median ops/s {statistics.median(results):.0f} of {len(results)} runs")


if __name__ == "__main__":
    main()
