"""The chaos schedule runner: five namespaced nodes, a workload, a nemesis schedule, a check.

    python -m tests.chaos.run [--schedule short|long] [--seed N] [--no-contrast] [--keep]

Brings the five hosts up (tests/chaos/netns.py), sets up two workloads
(tests/chaos/workload.py) that run at the same time under the same faults: the main
one on a bucket with siblings (allow_mult), and a smaller contrast one on a bucket with
`last_write_wins: true`. Then it waits the schedule's warm-up, applies and clears its
fault windows at their times (tests/chaos/nemesis.py), waits a few quiet seconds, heals
everything (rules gone, paused nodes continued, killed nodes started again), stops the
workloads, and hands both histories to the checker (tests/chaos/checker.py), which
waits for the replicas to converge (hinted handoff, read repair, anti-entropy), reads
everything, and judges. The last line printed is the main bucket's
`acknowledged=A lost=L unexpected=U converge_s=S`. The exit status is 0 when the main
bucket's check holds (nothing acknowledged lost, nothing unexpected, converged);
the contrast bucket's lost count is reported, not judged.

Data, node logs, the schedule, both histories' summaries and reports are kept in the
run folder (printed at the start) when `--keep` is given or the check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.chaos import nemesis as nm
from tests.chaos.checker import CheckResult, Op, final_check
from tests.chaos.netns import ChaosNet, ChaosUnavailable
from tests.chaos.workload import WorkloadConfig, WorkloadThread

CONVERGE_TIMEOUT_S = 180.0
READ_TIMEOUT_S = 60.0


@dataclass
class BucketOutcome:
    """One bucket's figures: what the workload did and what the checker found."""

    name: str
    lww: bool
    operations: int  # every operation, reads included
    result: CheckResult

    def line(self) -> str:
        r = self.result
        return (f"{self.name}: operations={self.operations} writes={r.attempted} "
                f"acknowledged={r.acknowledged} failed={r.failed} "
                f"indeterminate={r.indeterminate} lost={r.lost} unexpected={r.unexpected} "
                f"failed_present={r.failed_present} unreadable={r.unreadable} "
                f"diverging_at_heal={r.diverging_at_heal} converged={r.converged} "
                f"converge_s={r.converge_s}")


@dataclass
class ChaosRun:
    schedule: nm.Schedule
    main: BucketOutcome
    contrast: BucketOutcome | None
    nemesis_log: list[str]
    wall_s: float
    root: Path

    @property
    def ok(self) -> bool:
        return self.main.result.ok

    def to_json(self) -> dict[str, object]:
        def bucket(outcome: BucketOutcome | None) -> dict[str, object] | None:
            if outcome is None:
                return None
            r = outcome.result
            return {"name": outcome.name, "lww": outcome.lww, "operations": outcome.operations,
                    "writes": r.attempted, "acknowledged": r.acknowledged, "failed": r.failed,
                    "indeterminate": r.indeterminate, "lost": r.lost,
                    "unexpected": r.unexpected, "failed_present": r.failed_present,
                    "unreadable": r.unreadable, "diverging_at_heal": r.diverging_at_heal,
                    "first_poll_s": r.first_poll_s, "converged": r.converged,
                    "converge_s": r.converge_s}
        return {"schedule": self.schedule.name, "seed": self.schedule.seed,
                "preset": self.schedule.preset, "wall_s": round(self.wall_s, 1),
                "faults": self.schedule.describe(), "nemesis": self.nemesis_log,
                "main": bucket(self.main), "contrast": bucket(self.contrast)}


def _workload_configs(urls: tuple[str, ...], seed: int, duration_s: float,
                      contrast: bool) -> list[WorkloadConfig]:
    configs = [WorkloadConfig(urls, seed=seed, run_id=f"chaos{seed}", duration_s=duration_s,
                              set_keys=4, set_writers=4, unique_writers=2, readers=2)]
    if contrast:
        configs.append(WorkloadConfig(urls, seed=seed + 1, run_id=f"lww{seed}",
                                      duration_s=duration_s, set_keys=2, set_writers=3,
                                      unique_writers=0, readers=1, lww=True))
    return configs


async def _check_all(urls: list[str], configs: list[WorkloadConfig], histories: list[list[Op]],
                     heal_s: float) -> list[CheckResult]:
    return list(await asyncio.gather(*(
        final_check(urls, config.layout, history, lww=config.lww, heal_s=heal_s,
                    converge_timeout_s=CONVERGE_TIMEOUT_S, read_timeout_s=READ_TIMEOUT_S,
                    seed=config.seed)
        for config, history in zip(configs, histories, strict=True))))


def run_chaos(schedule: nm.Schedule, root: Path, contrast: bool = True,
              say: Callable[[str], None] = print) -> ChaosRun:
    """One run of `schedule` on a fresh five-host net under `root`; every wait bounded."""
    started = time.monotonic()
    with ChaosNet(root, preset=schedule.preset) as net:
        say(f"run {net.prefix}: 5 nodes up in {time.monotonic() - started:.1f} s "
            f"(preset {schedule.preset}), folder {root}")
        nemesis = nm.Nemesis(net)
        urls = tuple(net.urls())
        duration_s = schedule.warmup_s + schedule.faults_end_s + schedule.settle_s + 600
        configs = _workload_configs(urls, schedule.seed, duration_s, contrast)
        workloads = [WorkloadThread(config) for config in configs]
        try:
            for workload in workloads:
                workload.start()
            say(f"workload running; faults start in {schedule.warmup_s:.0f} s")
            time.sleep(schedule.warmup_s)
            log = nm.run_schedule(nemesis, schedule, time.monotonic(), on_event=say)
            time.sleep(schedule.settle_s)
            heal_s = time.monotonic()  # converge_s counts from the start of the heal
            nemesis.heal()
            say(f"healed {heal_s - started:.1f} s into the run "
                f"(took {time.monotonic() - heal_s:.1f} s: rules, restarts)")
        finally:
            histories = [workload.stop(timeout_s=60) for workload in workloads]
        urls_list = list(urls)
        results = asyncio.run(_check_all(urls_list, configs, histories, heal_s))
    outcomes = [BucketOutcome("lww" if config.lww else "main", config.lww, len(history), result)
                for config, history, result in zip(configs, histories, results, strict=True)]
    run = ChaosRun(schedule, outcomes[0], outcomes[1] if contrast else None,
                   log + nemesis.log[-1:], time.monotonic() - started, root)
    (root / "result.json").write_text(json.dumps(run.to_json(), indent=1))
    for outcome, history in zip(outcomes, histories, strict=True):
        (root / f"report-{outcome.name}.txt").write_text(
            outcome.result.report() + "\n" + repr(sorted(Counter(
                (op.type.value, op.outcome.value) for op in history).items())) + "\n")
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.run",
                                     description="a nemesis schedule on five namespaced nodes")
    parser.add_argument("--schedule", choices=["short", "long"], default="short")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-contrast", action="store_true",
                        help="skip the last_write_wins contrast bucket")
    parser.add_argument("--keep", action="store_true", help="keep data and logs")
    parser.add_argument("--root", help="run folder (default: a new temp folder)")
    args = parser.parse_args(argv)
    schedule = nm.make_schedule(args.schedule, args.seed)
    root = Path(args.root or tempfile.mkdtemp(prefix=f"dynakv-chaos-{args.schedule}-"))
    print(f"schedule {schedule.name}, seed {schedule.seed}:")
    for line in schedule.describe():
        print("  " + line)
    try:
        run = run_chaos(schedule, root, contrast=not args.no_contrast,
                        say=lambda text: print(text, flush=True))
    except ChaosUnavailable as error:
        print(f"skipped: {error}")
        return 77
    for outcome in (run.contrast, run.main):
        if outcome is not None:
            print(f"--- {outcome.name} bucket"
                  f"{' (last_write_wins: lost writes expected)' if outcome.lww else ''}")
            print(outcome.result.report())
            print(outcome.line())
    kept = args.keep or not run.ok
    print(f"wall time {run.wall_s:.0f} s; {'OK' if run.ok else 'FAILED'}; "
          f"{'kept' if kept else 'removed'} {root}")
    if not kept:
        shutil.rmtree(root, ignore_errors=True)
    print(run.main.result.summary())
    return 0 if run.ok else 1


if __name__ == "__main__":
    sys.exit(main())
