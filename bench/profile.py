"""Where the time goes: py-spy samples one dynakv node (and the load generator) while
`dynakv bench` drives a fresh three-node cluster, and the CPU each process used, in
user and system time and per operation.

    python bench/profile.py --workload A --protocol http --duration 15
    python bench/profile.py --target ceiling --protocol pb --gil
    python bench/profile.py --protocol pb --machine     # perf: the whole machine instead

`--target ceiling` profiles the bare quorum servers (bench/ceiling.py) the same way:
the CPU per operation of the two, side by side, is how much of it dynakv's own work is.

Writes bench/results/profile-<target>-<process>.txt (py-spy's collapsed stacks),
profile-<target>-<process>.svg (a flame graph) and profile-<target>.md: the CPU
seconds per process over the run and the top functions by own time ("self") and by
time including callees ("total"), as a share of the samples.

`--machine` samples every CPU of the machine with Linux perf (`perf record -a`, from
Debian's linux-perf, installed when missing) instead of py-spy on two processes: where
all of the machine's time went, by thread (each node's event loop and its other
threads, the commit thread among them; the load generator; the kernel's own threads;
idle) and, within each, in the kernel, the Python interpreter or other native code,
and the kernel's busiest functions. perf sees native code only: Python functions are
all "the interpreter" to it. Writes profile-<target>-machine.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from services import ceiling_cluster, dynakv_cluster, ensure_packages

RESULTS = Path(__file__).resolve().parent / "results"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PERF_RATE_HZ = 997


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU time of a process so far (from /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def pyspy() -> str:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else "py-spy"


def record(pid: int, seconds: float, out: Path, fmt: str, gil: bool
           ) -> subprocess.Popen[bytes]:
    return subprocess.Popen([pyspy(), "record", "--pid", str(pid), "--duration",
                             str(int(seconds)), "--rate", "200", "--format", fmt,
                             "--output", str(out), "--nonblocking", *(["--gil"] if gil else [])],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def top_functions(collapsed: Path, count: int) -> tuple[int, list[tuple[str, float, float]]]:
    """(samples, [(function, self share, total share)]) from py-spy's raw format."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        weight = int(number)
        frames = [frame.split(" (")[0] + " (" + frame.split(" (")[1].split(":")[0] + ")"
                  if " (" in frame else frame for frame in stack.split(";")]
        frames = [frame for frame in frames if not frame.startswith("process ")
                  and not frame.startswith("thread ")]
        if not frames:
            continue
        samples += weight
        own[frames[-1]] += weight
        for frame in set(frames):
            total[frame] += weight
    rows = [(name, own[name] / samples, total[name] / samples)
            for name, _ in own.most_common(count)] if samples else []
    return samples, rows


def shorten(name: str) -> str:
    return name.replace(str(Path(sys.prefix)), "<venv>").replace("site-packages/", "")


def threads_of(pid: int) -> list[int]:
    try:
        return sorted(int(task.name) for task in Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []


def other_threads(label: str) -> str:
    """The group of a node's threads other than its event loop."""
    return f"{label}: other threads (the commit thread)"


def thread_labels(processes: dict[int, str]) -> dict[int, str]:
    """Thread id -> what it is: a process's main thread is its event loop; a node's
    others are its commit thread and Python's helper threads."""
    labels: dict[int, str] = {}
    for pid, label in processes.items():
        for tid in threads_of(pid):
            labels[tid] = (label if tid == pid or label == "load generator"
                           else other_threads(label))
    return labels


def perf_rows(data: Path, sort: str, *extra: str) -> list[tuple[float, list[str]]]:
    """perf report's rows for `sort` keys."""
    out = subprocess.run(["perf", "report", "-i", str(data), "--no-children", "--stdio",
                          "-g", "none", "--sort", sort, "-t", "|", *extra],
                         capture_output=True, text=True, check=True).stdout
    return parse_perf_rows(out)


def parse_perf_rows(text: str) -> list[tuple[float, list[str]]]:
    """(share of all samples in %, [the sort keys' values]) from perf report's output
    with '|' between fields."""
    rows = []
    for line in text.splitlines():
        if line.startswith("#") or "|" not in line:
            continue
        share, *keys = (field.strip() for field in line.split("|"))
        rows.append((float(share.rstrip("%")), keys))
    return rows


def group_of(thread: str, labels: dict[int, str]) -> str:
    """The group of perf's "tid:command"."""
    tid, _, command = (part.strip() for part in thread.partition(":"))
    if tid.isdigit() and int(tid) in labels:
        return labels[int(tid)]
    if tid == "0":
        return "idle"
    if command.startswith(("kworker", "ksoftirqd", "jbd2", "kswapd", "kdamond", "rcu")):
        return "the kernel's threads (disk writeback, soft interrupts)"
    return "other processes (the profiler among them)"


def machine_report(by_thread: list[tuple[float, list[str]]],
                   kernel: list[tuple[float, list[str]]], labels: dict[int, str],
                   order: list[str]) -> list[str]:
    """Where the whole machine's samples went, by thread group and kind of code
    (`by_thread`: rows sorted by pid,dso), then the kernel's busiest functions."""
    groups: dict[str, dict[str, float]] = {}
    for share, (thread, dso) in by_thread:
        kind = ("kernel" if dso.startswith("[kernel") else
                "interpreter" if dso.startswith("libpython") else "native")
        kinds = groups.setdefault(group_of(thread, labels),
                                  {"kernel": 0.0, "interpreter": 0.0, "native": 0.0})
        kinds[kind] += share
    names = [name for name in order if name in groups] + sorted(
        name for name in groups if name not in order)
    lines = ["| threads | share of the machine | kernel | Python interpreter | other "
             "native code (C extensions, libc) |", "|---|---:|---:|---:|---:|"]
    for name in names:
        kinds = groups[name]
        lines.append(f"| {name} | {sum(kinds.values()):.1f}% | {kinds['kernel']:.1f}% | "
                     f"{kinds['interpreter']:.1f}% | {kinds['native']:.1f}% |")
    lines += ["", "The kernel's busiest functions, as a share of the machine:", "",
              "| function | share |", "|---|---:|"]
    lines += [f"| `{keys[0].removeprefix('[k]').strip()}` | {share:.1f}% |"
              for share, keys in kernel[:12]]
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default="dynakv", choices=("dynakv", "ceiling"))
    p.add_argument("--workload", default="A")
    p.add_argument("--protocol", default="http", choices=("http", "pb"))
    p.add_argument("--duration", type=float, default=15.0)
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--keys", type=int, default=10_000)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--gil", action="store_true",
                   help="sample only the thread holding the GIL: where Python spends CPU, "
                        "not where threads wait (a sync, the event loop's poll)")
    p.add_argument("--machine", action="store_true",
                   help="sample the whole machine with Linux perf instead of py-spy on a "
                        "node and the generator")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    if args.machine:
        ensure_packages(["perf"])
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"{args.target}-{args.protocol}"
    warmup = 3.0
    cluster = dynakv_cluster if args.target == "dynakv" else ceiling_cluster
    with tempfile.TemporaryDirectory(prefix="dynakv-profile-") as root, \
            cluster(Path(root), args.protocol) as service:
        argv = [sys.executable, "-m", "dynakv", "bench", "--json", "--quiet",
                "--workload", args.workload, "--concurrency", str(args.concurrency),
                "--keys", str(args.keys), *(a for url in service.urls for a in ("--url", url))]
        # the load phase alone first (a one-second run), then the profiled run
        subprocess.run([*argv, "--duration", "1", "--warmup", "0"], check=True,
                       capture_output=True)
        generator = subprocess.Popen(
            [*argv, "--no-load", "--duration", str(args.duration), "--warmup", str(warmup)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        node_pids = service.pids()
        time.sleep(warmup + 1)
        before = {pid: cpu_seconds(pid) for pid in [*node_pids, generator.pid]}
        started = time.monotonic()
        seconds = max(args.duration - 4, 3)
        labels = {node_pids[0]: "node1", node_pids[1]: "node2", node_pids[2]: "node3",
                  generator.pid: "load generator"}
        recorders = []
        perf_data = Path(root) / "perf.data"
        if args.machine:
            recorders.append(subprocess.Popen(
                ["perf", "record", "-a", "-F", str(PERF_RATE_HZ), "-o", str(perf_data), "--",
                 "sleep", str(int(seconds))],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        else:
            for label, pid in (("node1", node_pids[0]), ("generator", generator.pid)):
                for fmt, ext in (("raw", "txt"), ("flamegraph", "svg")):
                    recorders.append(record(pid, seconds,
                                            args.out / f"profile-{name}-{label}.{ext}",
                                            fmt, args.gil))
        threads = thread_labels(labels)
        for recorder in recorders:
            _, errors = recorder.communicate(timeout=seconds + 60)
            if recorder.returncode != 0:
                print(errors.decode(errors="replace")[-2000:], file=sys.stderr)
        elapsed = time.monotonic() - started
        after = {pid: cpu_seconds(pid) for pid in before}
        order = [group for label in labels.values()
                 for group in (label, other_threads(label))]
        machine = machine_report(
            perf_rows(perf_data, "pid,dso"), perf_rows(perf_data, "sym", "--dsos",
                                                       "[kernel.kallsyms]"),
            threads, order) if args.machine else []
        out, err = generator.communicate(timeout=args.duration + 600)
        if generator.returncode != 0:
            print(err.decode(errors="replace"), file=sys.stderr)
            return 1
    report = json.loads(out)
    sampler = (f"perf sampling every CPU at {PERF_RATE_HZ} Hz" if args.machine else
               "py-spy sampling at 200 Hz, non-blocking, costs a little"
               f"{'; GIL holder only' if args.gil else ''}")
    lines = [f"# Profile: {name}, workload {args.workload}, {args.concurrency} clients",
             "",
             f"Throughput during the profile {report['ops_per_s']:.0f} ops/s, p50 "
             f"{report['p50_ms']} ms, p99 {report['p99_ms']} ms ({sampler})."
             f" Load average {report['load_average']['before']}.",
             "", f"CPU used over {elapsed:.1f} s of the run (1.0 = one core busy; per "
             "operation: CPU time over the operations done meanwhile):", "",
             "| process | CPU (cores) | user | system | µs per operation (user + system) |",
             "|---|---:|---:|---:|---:|"]
    operations = report["ops_per_s"] * elapsed
    for pid, label in labels.items():
        user, system = (after[pid][i] - before[pid][i] for i in (0, 1))
        lines.append(f"| {label} | {(user + system) / elapsed:.2f} | {user / elapsed:.2f} | "
                     f"{system / elapsed:.2f} | {1e6 * user / operations:.0f} + "
                     f"{1e6 * system / operations:.0f} |")
    if args.machine:
        lines += ["", f"## The whole machine: perf record -a at {PERF_RATE_HZ} Hz on every CPU",
                  "", *machine]
        name += "-machine"
    for label in () if args.machine else ("node1", "generator"):
        samples, rows = top_functions(args.out / f"profile-{name}-{label}.txt", args.top)
        lines += ["", f"## {label}: top {args.top} functions by own time ({samples} samples)",
                  "", "| function | self | total |", "|---|---:|---:|"]
        lines += [f"| `{shorten(function)}` | {own:.1%} | {total:.1%} |"
                  for function, own, total in rows]
    (args.out / f"profile-{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
