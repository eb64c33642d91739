"""Where the time goes: py-spy samples one dynakv node (and the load generator) while
`dynakv bench` drives a fresh three-node cluster, and the CPU each process used, in
user and system time and per operation.

    python bench/profile.py --workload A --protocol http --duration 15
    python bench/profile.py --target ceiling --protocol pb --gil

`--target ceiling` profiles the bare quorum servers (bench/ceiling.py) the same way:
the CPU per operation of the two, side by side, is how much of it dynakv's own work is.

Writes bench/results/profile-<target>-<process>.txt (py-spy's collapsed stacks),
profile-<target>-<process>.svg (a flame graph) and profile-<target>.md: the CPU
seconds per process over the run and the top functions by own time ("self") and by
time including callees ("total"), as a share of the samples.
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

from services import ceiling_cluster, dynakv_cluster

RESULTS = Path(__file__).resolve().parent / "results"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


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
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
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
        recorders = []
        for label, pid in (("node1", node_pids[0]), ("generator", generator.pid)):
            for fmt, ext in (("raw", "txt"), ("flamegraph", "svg")):
                recorders.append(record(pid, seconds, args.out / f"profile-{name}-{label}.{ext}",
                                        fmt, args.gil))
        for recorder in recorders:
            _, errors = recorder.communicate(timeout=seconds + 60)
            if recorder.returncode != 0:
                print(errors.decode(errors="replace")[-2000:], file=sys.stderr)
        elapsed = time.monotonic() - started
        after = {pid: cpu_seconds(pid) for pid in before}
        out, err = generator.communicate(timeout=args.duration + 600)
        if generator.returncode != 0:
            print(err.decode(errors="replace"), file=sys.stderr)
            return 1
    report = json.loads(out)
    labels = {node_pids[0]: "node1", node_pids[1]: "node2", node_pids[2]: "node3",
              generator.pid: "load generator"}
    lines = [f"# Profile: {name}, workload {args.workload}, {args.concurrency} clients",
             "",
             f"Throughput during the profile {report['ops_per_s']:.0f} ops/s, p50 "
             f"{report['p50_ms']} ms, p99 {report['p99_ms']} ms (py-spy sampling at 200 Hz, "
             f"non-blocking, costs a little{'; GIL holder only' if args.gil else ''})."
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
    for label in ("node1", "generator"):
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
