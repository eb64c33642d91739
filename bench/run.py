"""The whole benchmark: every workload against dynakv (HTTP and Protocol Buffers), the
bare ceiling (PB and HTTP), Redis with replicas and WAIT, one Redis and etcd, each run
several times with the same load generator (`dynakv bench`), in one run of this script.

    python bench/run.py                       # defaults: 10 s runs, 3 of each, 50 clients
    python bench/run.py --workloads A --runs 1 --duration 3 --targets dynakv-http,redis

Each target is started fresh (bench/services.py), loaded once, then driven through the
workloads in the order given (W last by default: its writes leave siblings behind);
then it is stopped before the next starts, so targets never compete for the CPU.
Writes bench/results/run-<time>.json (every run), latest.json (medians and ratios),
latest.md (the tables) and latency.png (the plot).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from services import STARTERS, Service

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_TARGETS = "dynakv-pb,dynakv-http,ceiling-pb,ceiling-http,redis-replicated,redis,etcd"
METRICS = ("ops_per_s", "p50_ms", "p99_ms", "p99_9_ms", "siblings_per_read")
# (numerator, denominator, the target for the ratio on workload A)
RATIOS = (
    ("dynakv-pb", "redis-replicated", 1.5),
    ("dynakv-pb", "etcd", 5.0),
    ("dynakv-http", "dynakv-pb", 0.6),
    ("dynakv-pb", "ceiling-pb", 0.7),
    ("dynakv-http", "ceiling-http", 0.7),
    ("dynakv-http", "redis-replicated", None),
    ("dynakv-http", "etcd", None),
    ("dynakv-pb", "redis", None),
    ("dynakv-http", "redis", None),
)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--targets", default=DEFAULT_TARGETS, help=f"default {DEFAULT_TARGETS}")
    p.add_argument("--workloads", default="C,B,A,W", help="in this order (default C,B,A,W)")
    p.add_argument("--runs", type=int, default=3, help="runs of each workload (3)")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds (10)")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds (2)")
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--processes", type=int, default=1, help="load-generator processes")
    p.add_argument("--keys", type=int, default=10_000)
    p.add_argument("--value-size", type=int, default=100)
    p.add_argument("--distribution", default="uniform", choices=("uniform", "zipfian"))
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    args.workloads = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    unknown = [t for t in args.targets if t not in STARTERS]
    if unknown:
        p.error(f"unknown targets {unknown}; known: {', '.join(STARTERS)}")
    if args.runs < 1:
        p.error("--runs must be at least 1")
    return args


def bench(args: argparse.Namespace, service: Service, workload: str, load: bool
          ) -> dict[str, Any]:
    argv = [sys.executable, "-m", "dynakv", "bench", "--json", "--quiet",
            "--label", service.name, "--workload", workload,
            "--duration", str(args.duration), "--warmup", str(args.warmup),
            "--concurrency", str(args.concurrency), "--processes", str(args.processes),
            "--keys", str(args.keys), "--value-size", str(args.value_size),
            "--distribution", args.distribution, *service.bench_args,
            *(arg for url in service.urls for arg in ("--url", url))]
    if not load:
        argv.append("--no-load")
    timeout = args.duration + args.warmup + 300
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip() or f"dynakv bench exited {done.returncode}")
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def run_target(args: argparse.Namespace, name: str, root: Path) -> tuple[list[dict[str, Any]],
                                                                           str | None]:
    reports: list[dict[str, Any]] = []
    try:
        service = STARTERS[name](root)
    except Exception as error:  # a peer that cannot start is reported, not fatal
        return reports, f"could not start: {error}"
    with service:
        load = True
        for workload in args.workloads:
            for number in range(1, args.runs + 1):
                try:
                    report = bench(args, service, workload, load)
                except (RuntimeError, subprocess.TimeoutExpired) as error:
                    return reports, str(error).splitlines()[-1]
                load = False
                report["target"] = name
                report["run"] = number
                reports.append(report)
                print(f"  {name:<17} {workload} run {number}: {report['ops_per_s']:>9.0f} ops/s"
                      f"  p50 {report['p50_ms']} ms  p99 {report['p99_ms']} ms  "
                      f"p99.9 {report['p99_9_ms']} ms  errors {report['errors']}  "
                      f"load avg {report['load_average']['before'][0]}", flush=True)
    return reports, None


def medians(reports: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    table: dict[str, dict[str, dict[str, Any]]] = {}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for report in reports:
        groups.setdefault((report["target"], report["workload"]), []).append(report)
    for (target, workload), group in groups.items():
        row: dict[str, Any] = {"runs": len(group),
                               "errors": sum(r["errors"] for r in group)}
        for metric in METRICS:
            values = [r[metric] for r in group if r.get(metric) is not None]
            row[metric] = round(statistics.median(values), 3) if values else None
        row["ops_per_s_runs"] = [r["ops_per_s"] for r in group]
        row["load_average"] = [r["load_average"]["before"][0] for r in group]
        table.setdefault(target, {})[workload] = row
    return table


def ratios(table: dict[str, dict[str, dict[str, Any]]], workloads: list[str]
           ) -> list[dict[str, Any]]:
    rows = []
    for numerator, denominator, goal in RATIOS:
        if numerator not in table or denominator not in table:
            continue
        row: dict[str, Any] = {"ratio": f"{numerator} / {denominator}", "goal_A": goal}
        for workload in workloads:
            top = table[numerator].get(workload, {}).get("ops_per_s")
            bottom = table[denominator].get(workload, {}).get("ops_per_s")
            row[workload] = round(top / bottom, 2) if top and bottom else None
        rows.append(row)
    return rows


def markdown(summary: dict[str, Any]) -> str:
    workloads = summary["settings"]["workloads"]
    lines = [
        f"Medians of {summary['settings']['runs']} runs of {summary['settings']['duration']} s "
        f"(after {summary['settings']['warmup']} s warm-up), "
        f"{summary['settings']['concurrency']} clients in "
        f"{summary['settings']['processes']} load-generator process(es), "
        f"{summary['settings']['keys']} records of {summary['settings']['value_size']} bytes, "
        f"{summary['settings']['distribution']} keys; {summary['started']}, load average "
        f"{summary['load_average']['before']} before and {summary['load_average']['after']} "
        f"after; CPU pressure (share of time some task waited for a CPU, PSI avg60) "
        f"{summary['cpu_pressure_avg60_percent']['before']}% before and "
        f"{summary['cpu_pressure_avg60_percent']['after']}% after.",
        "",
        "Throughput in operations per second (an update is a read then a write), then "
        "p50 / p99 / p99.9 latency in ms:",
        "",
        "| target | " + " | ".join(f"{w} ops/s | {w} p50/p99/p99.9" for w in workloads) + " |",
        "|---|" + "---:|---|" * len(workloads),
    ]
    for target, row in summary["medians"].items():
        cells = []
        for workload in workloads:
            cell = row.get(workload)
            if cell is None:
                cells += ["—", "—"]
                continue
            errors = f" ({cell['errors']} errors)" if cell["errors"] else ""
            cells += [f"{cell['ops_per_s']:.0f}{errors}",
                      f"{cell['p50_ms']} / {cell['p99_ms']} / {cell['p99_9_ms']}"]
        lines.append(f"| {target} | " + " | ".join(cells) + " |")
    for target, reason in summary["skipped"].items():
        lines.append(f"| {target} | not measured: {reason} |")
    siblings = {t: {w: c.get("siblings_per_read") for w, c in row.items()}
                for t, row in summary["medians"].items() if t.startswith("dynakv")}
    if siblings:
        lines += ["", "Siblings per read (dynakv): " + "; ".join(
            f"{t}: " + ", ".join(f"{w} {v}" for w, v in row.items() if v is not None)
            for t, row in siblings.items())]
    if summary["ratios"]:
        lines += ["", "Throughput ratios (same run, medians):", "",
                  "| ratio | " + " | ".join(workloads) + " | goal (A) |",
                  "|---|" + "---:|" * len(workloads) + "---:|"]
        for row in summary["ratios"]:
            goal = f"≥ {row['goal_A']}" if row["goal_A"] else ""
            lines.append(f"| {row['ratio']} | "
                         + " | ".join(str(row.get(w) if row.get(w) is not None else "—")
                                      for w in workloads) + f" | {goal} |")
    return "\n".join(lines) + "\n"


def plot(reports: list[dict[str, Any]], summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dynakv.bench.histogram import Latencies

    workload = "A" if "A" in summary["settings"]["workloads"] else \
        summary["settings"]["workloads"][0]
    figure, (curves, bars) = plt.subplots(1, 2, figsize=(13, 5))
    for target in summary["medians"]:
        group = [r for r in reports if r["target"] == target and r["workload"] == workload]
        if not group:
            continue
        group.sort(key=lambda r: r["ops_per_s"])
        median_run = group[len(group) // 2]
        curve = Latencies.decode(median_run["histogram"].encode()).curve()
        xs = [1 / max(1 - p / 100, 1e-6) for p, _ in curve]
        curves.plot(xs, [ms for _, ms in curve], label=f"{target} "
                    f"({median_run['ops_per_s']:.0f} ops/s)")
    curves.set_xscale("log")
    curves.set_yscale("log")
    ticks = [2, 10, 100, 1000, 10000]
    curves.set_xticks(ticks, ["50%", "90%", "99%", "99.9%", "99.99%"])
    curves.set_xlabel("percentile")
    curves.set_ylabel("latency (ms)")
    curves.set_title(f"Workload {workload}: latency by percentile (median run)")
    curves.grid(True, which="both", alpha=0.3)
    curves.legend(fontsize=8)
    workloads = summary["settings"]["workloads"]
    targets = list(summary["medians"])
    width = 0.8 / max(len(targets), 1)
    for index, target in enumerate(targets):
        values = [summary["medians"][target].get(w, {}).get("ops_per_s") or 0
                  for w in workloads]
        bars.bar([i + index * width for i in range(len(workloads))], values, width,
                 label=target)
    bars.set_xticks([i + width * (len(targets) - 1) / 2 for i in range(len(workloads))],
                    workloads)
    bars.set_ylabel("operations per second (median)")
    bars.set_title("Throughput by workload")
    bars.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def cpu_pressure() -> float | None:
    """Share of the last 60 s in which some runnable task waited for a CPU (Linux PSI)."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    fields = dict(item.split("=") for item in line.split()[1:])
    return float(fields["avg60"])


def main() -> int:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    before = [round(x, 2) for x in os.getloadavg()]
    pressure_before = cpu_pressure()
    print(f"bench/run.py: {', '.join(args.targets)}; workloads {', '.join(args.workloads)}, "
          f"{args.runs} runs of {args.duration} s; load average {before}", flush=True)
    reports: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="dynakv-bench-") as root:
        for name in args.targets:
            print(f"{name}: starting", flush=True)
            found, failure = run_target(args, name, Path(root) / name)
            reports += found
            if failure:
                skipped[name] = failure
                print(f"{name}: stopped early: {failure}", flush=True)
    settings = {key: value for key, value in vars(args).items() if key != "out"}
    table = medians(reports)
    summary = {"started": started, "settings": settings,
               "load_average": {"before": before,
                                "after": [round(x, 2) for x in os.getloadavg()]},
               "cpu_pressure_avg60_percent": {"before": pressure_before,
                                              "after": cpu_pressure()},
               "cpus": os.cpu_count(), "medians": table,
               "ratios": ratios(table, args.workloads), "skipped": skipped}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"run-{stamp}.json").write_text(json.dumps({"summary": summary,
                                                            "runs": reports}) + "\n")
    (args.out / "latest.json").write_text(json.dumps(summary, indent=2) + "\n")
    text = markdown(summary)
    (args.out / "latest.md").write_text(text)
    if reports:
        plot(reports, summary, args.out / "latency.png")
    print(text)
    return 0 if reports else 1


if __name__ == "__main__":
    sys.exit(main())
