"""`dynakv bench`: the command line, and the report (a table, or one JSON object).

    dynakv bench --url http://127.0.0.1:8098 --workload A --concurrency 50 --duration 10
    dynakv bench --url redis://127.0.0.1:6379 --wait-replicas 2 --workload A --json
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from dynakv.bench.drivers import PROTOCOLS, Target, protocol_of
from dynakv.bench.histogram import PERCENTILES, Latencies
from dynakv.bench.runner import BenchConfig, Outcome, Part, run
from dynakv.bench.workload import DISTRIBUTIONS, WORKLOADS, Op


def add_bench_parser(commands: Any) -> None:
    p = commands.add_parser(
        "bench", help="YCSB-style load against dynakv (or Redis, etcd)",
        description="Drive a store with C concurrent clients and report throughput, "
                    "latency percentiles (HdrHistogram) and siblings per read.")
    p.add_argument("--url", action="append", default=[], metavar="URL",
                   help="a node to send requests to (repeat: clients are spread over them); "
                        "http://, pb://HOST:PORT, redis://HOST:PORT, etcd://HOST:PORT")
    p.add_argument("--protocol", choices=PROTOCOLS, default=None,
                   help="http (default), pb, redis or etcd; else implied by the URL")
    p.add_argument("--workload", default="A", type=str.upper, choices=sorted(WORKLOADS),
                   help="A 50/50 read/update, B 95/5, C read only, W write only (default A)")
    p.add_argument("--distribution", default="uniform", choices=DISTRIBUTIONS,
                   help="how keys are chosen (default uniform)")
    p.add_argument("--concurrency", type=int, default=50, help="concurrent clients (50)")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds (10)")
    p.add_argument("--warmup", type=float, default=2.0, help="unrecorded seconds first (2)")
    p.add_argument("--keys", type=int, default=10_000, help="records (10000)")
    p.add_argument("--value-size", type=int, default=100, help="bytes per value (100)")
    p.add_argument("--processes", type=int, default=1,
                   help="load-generator processes sharing the clients (1)")
    p.add_argument("--bucket", default="bench", help="bucket (or etcd key prefix)")
    p.add_argument("--wait-replicas", type=int, default=0,
                   help="redis: WAIT for this many replicas after each write (0)")
    p.add_argument("--no-load", dest="load", action="store_false",
                   help="skip the load phase (the records are already there)")
    p.add_argument("--seed", type=int, default=1, help="random seed (1)")
    p.add_argument("--label", default=None, help="a name for this target in the report")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(run=run_bench_command)


def config_from(args: argparse.Namespace) -> BenchConfig:
    urls = args.url or ["http://127.0.0.1:8098"]
    protocols = {protocol_of(url, args.protocol) for url in urls}
    if len(protocols) > 1:
        raise ValueError("every --url must speak the same protocol")
    protocol = protocols.pop()
    if args.wait_replicas < 0 or (args.wait_replicas and protocol != "redis"):
        raise ValueError("--wait-replicas is a non-negative count, for redis only")
    targets = tuple(Target(protocol, url, args.bucket, args.wait_replicas) for url in urls)
    config = BenchConfig(targets, args.workload, args.distribution, args.concurrency,
                         args.duration, args.warmup, args.keys, args.value_size,
                         args.processes, args.seed, args.load, not args.quiet)
    config.check()
    return config


def run_bench_command(args: argparse.Namespace) -> int:
    from dynakv.cli import UsageError

    try:
        config = config_from(args)
    except ValueError as error:
        raise UsageError(str(error)) from None
    try:
        outcome = run(config)
    except ConnectionError as error:
        raise UsageError(f"bench: {error}") from None
    report = build_report(config, outcome, args.label)
    print(json.dumps(report) if args.json else format_report(report))
    return 0 if report["ops"] else 1


def merge(parts: list[Part]) -> tuple[dict[str, Latencies], Latencies]:
    """Per-operation histograms over every process, and all operations together."""
    merged: dict[str, Latencies] = {}
    overall = Latencies()
    for part in parts:
        for op, encoded in part.histograms.items():
            latencies = Latencies.decode(encoded)
            merged.setdefault(op, Latencies()).merge(latencies)
            overall.merge(latencies)
    return merged, overall


def build_report(config: BenchConfig, outcome: Outcome, label: str | None = None
                 ) -> dict[str, Any]:
    parts = outcome.parts
    merged, overall = merge(parts)
    elapsed_s = max((part.elapsed_s for part in parts), default=0.0) or config.duration_s
    ops = overall.count
    requests = sum(part.requests for part in parts)
    reads = sum(part.reads for part in parts)
    errors: dict[str, int] = {}
    for part in parts:
        for kind, count in part.errors.items():
            errors[kind] = errors.get(kind, 0) + count
    report: dict[str, Any] = {
        "label": label or config.targets[0].protocol,
        "protocol": config.targets[0].protocol,
        "urls": [target.url for target in config.targets],
        "workload": config.workload,
        "distribution": config.distribution,
        "concurrency": config.concurrency,
        "processes": config.processes,
        "keys": config.keys,
        "value_size": config.value_size,
        "duration_s": config.duration_s,
        "warmup_s": config.warmup_s,
        "elapsed_s": round(elapsed_s, 3),
        "ops": ops,
        "ops_per_s": round(ops / elapsed_s, 1),
        "requests_per_s": round(requests / elapsed_s, 1),
        "errors": sum(errors.values()),
        "error_kinds": errors,
    }
    summary = overall.summary()
    for name, _ in PERCENTILES:
        report[name] = summary.get(name)
    report["mean_ms"] = summary.get("mean_ms")
    report["max_ms"] = summary.get("max_ms")
    report["operations"] = {op: merged[op].summary() for op in (o.value for o in Op)
                            if op in merged}
    report["reads"] = reads
    siblings = sum(part.siblings for part in parts)
    report["siblings_per_read"] = round(siblings / reads, 4) if reads else None
    report["siblings_max"] = max((part.siblings_max for part in parts), default=0)
    report["reads_with_siblings"] = sum(part.reads_with_siblings for part in parts)
    report["reads_not_found"] = sum(part.reads_not_found for part in parts)
    report["load_s"] = round(outcome.load_s, 3) if outcome.load_s is not None else None
    report["load_average"] = {"before": [round(x, 2) for x in outcome.load_average_before],
                              "after": [round(x, 2) for x in outcome.load_average_after]}
    report["histogram"] = overall.encode().decode("ascii")
    return report


def format_report(report: dict[str, Any]) -> str:
    lines = [
        f"{report['label']} ({report['protocol']}): workload {report['workload']}, "
        f"{report['distribution']} keys over {report['keys']} records, "
        f"{report['value_size']}-byte values, {report['concurrency']} clients in "
        f"{report['processes']} process(es), {report['duration_s']} s",
        f"throughput  {report['ops_per_s']:.0f} ops/s ({report['requests_per_s']:.0f} "
        f"requests/s), {report['ops']} ops, {report['errors']} errors "
        + (json.dumps(report["error_kinds"]) if report["errors"] else ""),
        f"{'operation':<10} {'count':>9} {'mean':>8} {'p50':>8} {'p99':>8} {'p99.9':>8} "
        f"{'max':>8}  (ms)",
    ]
    rows = [("all", report_summary(report)), *report["operations"].items()]
    for name, summary in rows:
        if not summary.get("count"):
            continue
        lines.append(f"{name:<10} {summary['count']:>9} {summary['mean_ms']:>8.2f} "
                     f"{summary['p50_ms']:>8.2f} {summary['p99_ms']:>8.2f} "
                     f"{summary['p99_9_ms']:>8.2f} {summary['max_ms']:>8.2f}")
    if report["reads"]:
        lines.append(f"siblings per read {report['siblings_per_read']} (max "
                     f"{report['siblings_max']}; {report['reads_with_siblings']} reads with "
                     f"siblings, {report['reads_not_found']} not found)")
    if report["load_s"] is not None:
        lines.append(f"load phase: {report['keys']} records in {report['load_s']} s")
    lines.append(f"load average before {report['load_average']['before']}, after "
                 f"{report['load_average']['after']}")
    return "\n".join(lines)


def report_summary(report: dict[str, Any]) -> dict[str, Any]:
    return {"count": report["ops"], "mean_ms": report["mean_ms"], "p50_ms": report["p50_ms"],
            "p99_ms": report["p99_ms"], "p99_9_ms": report["p99_9_ms"],
            "max_ms": report["max_ms"]}
