"""The named scenarios (Dynamo paper, Jepsen's Riak analysis) pass every checker and
their own checks, for several seeds. Scenarios with a known core bug are expected
to fail, in test_regressions.py."""

from __future__ import annotations

import pytest

from dynakv.sim.runner import SimOptions, run
from dynakv.sim.scenarios import SCENARIOS

PASSING = sorted(name for name, scenario in SCENARIOS.items() if not scenario.known_core_bug)


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("name", PASSING)
def test_scenario(name: str, seed: int) -> None:
    result = run(SimOptions(seed=seed, scenario=name))
    assert not result.failed, result.summary()
    replay = f"python -m dynakv.sim --seed {seed} --scenario {name}"
    assert result.options.replay_command() == replay
