"""The CI sweep: at least 200 seeds across the fault mixes, every checker on,
convergence (checker 3) included, with its default bound (the settle time,
runner.convergence_bound_ms). A failing seed is printed with the command that
replays it; keep it as a regression test in test_regressions.py.

The long sweep (`make long`, pytest -m long) runs many more seeds, longer."""

from __future__ import annotations

import os
from collections import Counter

import pytest

from dynakv.sim import faults
from dynakv.sim.runner import MIXED, SimOptions, SimResult, sweep

CI_SEEDS = 200
# Sized so that the whole of tests/sim takes under about three minutes on two cores.
CI_OPTIONS = SimOptions(faults=MIXED, duration_ms=2_000, clients=4)
JOBS = min(2, os.cpu_count() or 1)


def _report(results: list[SimResult]) -> str:
    failed = [result for result in results if result.failed]
    lines = [f"{len(failed)} of {len(results)} seeds failed"]
    for result in failed:
        lines += ["", result.summary(), f"replay: {result.options.replay_command()}"]
    return "\n".join(lines)


@pytest.mark.timeout(1_200)  # ~90 s on two idle cores; a loaded machine can take 5 min
def test_ci_sweep_of_200_seeds_across_fault_mixes() -> None:
    results = list(sweep(CI_SEEDS, 0, CI_OPTIONS, jobs=JOBS))
    assert len(results) == CI_SEEDS
    assert not any(result.failed for result in results), _report(results)
    assert all(result.check("convergence").enabled for result in results)
    mixes = Counter(result.options.faults for result in results)
    assert set(mixes) == set(faults.SWEEP_MIXES)
    # The sweep is not vacuous: writes were acknowledged, and each mix did its harm.
    assert all(result.ops["acknowledged"] > 0 for result in results)
    by_mix: dict[str, Counter[str]] = {mix: Counter() for mix in faults.SWEEP_MIXES}
    for result in results:
        by_mix[result.options.faults].update(result.stats)
    assert by_mix["lossy"]["lost"] > 0 and by_mix["lossy"]["duplicated"] > 0
    assert by_mix["partitions"]["cut"] > 0
    assert by_mix["crashes"]["crashes"] > 0 and by_mix["wipe"]["crashes"] > 0
    assert by_mix["none"]["lost"] == by_mix["none"]["cut"] == by_mix["none"]["crashes"] == 0
    # Fallbacks kept hints and handed them off; anti-entropy repaired what they missed.
    assert by_mix["fallbacks"]["hints_max"] > 0 and by_mix["fallbacks"]["hints_delivered"] > 0
    assert by_mix["wipe"]["ae_keys_repaired"] > 0


@pytest.mark.long
@pytest.mark.timeout(4 * 3600)
def test_long_sweep() -> None:
    results = list(sweep(1_000, 100_000, SimOptions(faults=MIXED), jobs=JOBS))
    assert not any(result.failed for result in results), _report(results)
