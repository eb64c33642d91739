"""`python -m dynakv.sim`: run one simulation, a scenario, or a sweep of seeds.

One run prints a summary (ops attempted and acknowledged, checker results) and a
line `trace <sha256>`; a sweep prints one line per seed and ends with
`seeds=K failed=F`, after the command that replays each failing seed. The exit
status is 1 when any checker failed.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from dynakv.sim import faults
from dynakv.sim.runner import MIXED, SimOptions, SimResult, run, sweep
from dynakv.sim.scenarios import SCENARIOS

DEFAULTS = SimOptions()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m dynakv.sim",
        description="Run dynakv's core in a deterministic simulation with faults and checkers.",
    )
    p.add_argument("--seed", type=int, default=0, help="the seed of one run (default 0)")
    p.add_argument("--nodes", type=int, default=5, help="nodes in the cluster (default 5)")
    p.add_argument("--duration-ms", type=int, default=DEFAULTS.duration_ms,
                   help="virtual time clients write for (default %(default)s)")
    p.add_argument("--faults", default=None,
                   help=f"fault mix: {', '.join(faults.MIXES)}, or '{MIXED}': the mix a "
                        f"sweep gives the seed (cycling through {', '.join(faults.SWEEP_MIXES)}); "
                        "a sweep defaults to mixed, one run to chaos")
    p.add_argument("--clients", type=int, default=DEFAULTS.clients,
                   help="concurrent clients (default %(default)s)")
    p.add_argument("--lww", action="store_true",
                   help="add a last_write_wins bucket (checker 1 is then expected to fail)")
    p.add_argument("--check-convergence", action=argparse.BooleanOptionalAction, default=True,
                   help="checker 3: every replica holds the same versions at the end (on by "
                        "default; --no-check-convergence switches it off, for debugging)")
    p.add_argument("--settle-ms", type=int, default=0,
                   help="virtual time from the clients' stop to the checks (checker 3's "
                        "bound); default: runner.convergence_bound_ms, 3580 ms for 5 nodes")
    p.add_argument("--scenario", choices=sorted(SCENARIOS), help="run a named scenario")
    p.add_argument("--sweep", type=int, metavar="K", help="run K seeds")
    p.add_argument("--start-seed", type=int, default=0, help="the first seed of a sweep")
    p.add_argument("--jobs", type=int, default=1, help="processes for a sweep (default 1)")
    p.add_argument("--trace-lines", type=int, default=0,
                   help="print the last N trace lines of one run (debugging)")
    p.add_argument("--show-faults", action="store_true", help="print the fault plan of one run")
    return p


def _options(args: argparse.Namespace, default_faults: str) -> SimOptions:
    mix = args.faults or default_faults
    if mix == MIXED and args.sweep is None:  # the mix this seed gets in a sweep
        mix = faults.SWEEP_MIXES[args.seed % len(faults.SWEEP_MIXES)]
    if mix != MIXED:
        faults.get_mix(mix)  # fail early on a typo
    return SimOptions(
        seed=args.seed, nodes=args.nodes, duration_ms=args.duration_ms, faults=mix,
        clients=args.clients, lww=args.lww, check_convergence=args.check_convergence,
        scenario=args.scenario or "", trace_lines=args.trace_lines, settle_ms=args.settle_ms,
    )


def run_one(args: argparse.Namespace) -> int:
    result = run(_options(args, "chaos"))
    if args.show_faults:
        print("faults:")
        for line in result.faults:
            print(f"  {line}")
    if result.trace_lines:
        print("last trace lines:")
        for line in result.trace_lines:
            print(f"  {line}")
    print(result.summary())
    if result.failed:
        print(f"replay: {result.options.replay_command()}")
    return 1 if result.failed else 0


def _line(result: SimResult) -> str:
    options = result.options
    what = options.scenario or options.faults
    verdict = "FAILED" if result.failed else "ok"
    return (f"seed {options.seed} {what}: {verdict} ops={result.ops['attempted']} "
            f"acked={result.ops['acknowledged']} trace {result.trace_hash[:16]}")


def run_sweep(args: argparse.Namespace) -> int:
    base = _options(args, MIXED)
    started = time.perf_counter()
    failures: list[SimResult] = []
    count = 0
    for result in sweep(args.sweep, args.start_seed, base, jobs=args.jobs):
        count += 1
        print(_line(result), flush=True)
        if result.failed:
            failures.append(result)
    for result in failures:
        print(f"\nFAILED seed {result.options.seed}:")
        print(result.summary())
        print(f"replay: {result.options.replay_command()}")
    print(f"sweep took {time.perf_counter() - started:.1f} s")
    print(f"seeds={count} failed={len(failures)}")
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.sweep is not None:
        return run_sweep(args)
    return run_one(args)


if __name__ == "__main__":
    sys.exit(main())
