"""Failing runs found by the simulator, kept so that they keep being checked.

A regression that reveals a bug in core/ is marked xfail(strict=True) with the bug
in its reason: it starts to pass (XPASS, a failure) the day the core is fixed, and
the mark must then go. Runs are kept as scripted scenarios (fixed faults and
requests, scenarios.py) rather than as sweep seeds, so that they stay meaningful
when the fault plans change; a sweep seed that fails is first turned into one.
"""

from __future__ import annotations

import pytest

from dynakv.sim.runner import SimOptions, run
from dynakv.sim.scenarios import SCENARIOS

FALLBACK_REWRITE = SCENARIOS["fallback-rewrite"]


@pytest.mark.parametrize("seed", [1, 2])
def test_a_fallback_never_reuses_a_dot_after_dropping_its_copy(seed: int) -> None:
    """Found by the sweep (seed 1258, wipe mix, before the fault plans were rescaled):
    `python -m dynakv.sim --scenario fallback-rewrite --seed 1` replays it."""
    result = run(SimOptions(seed=seed, scenario="fallback-rewrite"))
    assert not result.extra_failures, result.summary()  # all three writes were acked
    assert not result.failed, result.summary()
