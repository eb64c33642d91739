"""One seed reproduces a run exactly: the same trace hash twice, in one process or
in two (with different PYTHONHASHSEED values, so that nothing depends on Python's
per-process string hashing)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dynakv.sim.network import Network
from dynakv.sim.runner import SimOptions, run
from dynakv.sim.scheduler import Scheduler

ROOT = Path(__file__).resolve().parents[2]
OPTIONS = SimOptions(seed=11, faults="chaos", duration_ms=2_000, clients=4)


def test_scheduler_runs_actions_in_time_then_submission_order() -> None:
    scheduler = Scheduler()
    seen: list[str] = []
    scheduler.at(5, lambda: seen.append("b"))
    scheduler.at(3, lambda: seen.append("a"))
    scheduler.at(5, lambda: seen.append("c"))
    scheduler.at(9, lambda: seen.append("late"))
    scheduler.run_until(5)
    assert seen == ["a", "b", "c"]
    assert scheduler.now_ms == 5


def test_a_link_is_fifo_unless_reordered_and_a_cut_drops_messages() -> None:
    import random

    scheduler = Scheduler()
    arrived: list[bytes] = []
    network = Network(scheduler, random.Random(1),
                      lambda src, dst, payload: arrived.append(payload))
    for index in range(50):
        network.send("a", "b", bytes([index]))
    network.cut([("a", "c")])
    network.send("a", "c", b"cut")
    scheduler.run_until(1_000)
    assert arrived == [bytes([index]) for index in range(50)]
    assert network.stats.cut == 1
    assert network.connected("b", "c") and not network.connected("c", "a")


def test_the_same_seed_gives_the_same_trace() -> None:
    first, second = run(OPTIONS), run(OPTIONS)
    assert first.trace_hash == second.trace_hash
    assert first.events == second.events and first.ops == second.ops
    assert run(SimOptions(seed=12, faults="chaos", duration_ms=2_000, clients=4)).trace_hash \
        != first.trace_hash


def _trace_in_subprocess(hash_seed: str) -> str:
    command = [sys.executable, "-m", "dynakv.sim", "--seed", str(OPTIONS.seed),
               "--faults", OPTIONS.faults, "--duration-ms", str(OPTIONS.duration_ms),
               "--clients", str(OPTIONS.clients)]
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("trace ")]
    assert len(lines) == 1, done.stdout
    return lines[0].split()[1]


def test_two_processes_with_different_string_hashing_agree() -> None:
    in_process = run(OPTIONS).trace_hash
    assert _trace_in_subprocess("1") == in_process
    assert _trace_in_subprocess("4242") == in_process
