"""Failing runs found by the simulator, kept so that they keep being checked.

A regression that reveals a bug in core/ is marked xfail(strict=True) with the bug
in its reason (the scenario's known_core_bug) until the core is fixed; it then
passes, and the mark goes. The four below (handoff backoff, reaper spin, a read
repair older than a reap, request ids reused after a restart) were fixed so.
Runs are kept as scripted scenarios (fixed faults and requests, scenarios.py) rather
than as sweep seeds, so that they stay meaningful when the fault plans change; a
sweep seed that fails is first turned into one.
"""

from __future__ import annotations

import pytest

from dynakv.sim.runner import SimOptions, run


@pytest.mark.parametrize("seed", [1, 2])
def test_a_fallback_never_reuses_a_dot_after_dropping_its_copy(seed: int) -> None:
    """Found by the sweep (seed 1258, wipe mix, before the fault plans were rescaled):
    `python -m dynakv.sim --scenario fallback-rewrite --seed 1` replays it."""
    result = run(SimOptions(seed=seed, scenario="fallback-rewrite"))
    assert not result.extra_failures, result.summary()  # all three writes were acked
    assert not result.failed, result.summary()


def test_hints_reach_an_owner_that_crashed_during_handoff_within_the_bound() -> None:
    """Found by the long sweep with convergence on (seed 100022, chaos, at the time: a batch of
    three deliveries timed out and the fallback waited 4 s, so checker 3 failed).
    `python -m dynakv.sim --scenario handoff-backoff --seed 1` replays it: the owner
    crashes with a batch of hints in flight; the fallbacks' backoffs reach 16-30 s."""
    result = run(SimOptions(seed=1, scenario="handoff-backoff"))
    assert not result.failed, result.summary()


def test_a_reap_waiting_for_a_lost_vote_does_not_spin() -> None:
    """Found when the sweep's reap interval was 200 ms (below the 1 s request timeout):
    virtual time stood still. `python -m dynakv.sim --scenario reaper-spin --seed 1`
    replays it; checker 5 reports the busy loop."""
    result = run(SimOptions(seed=1, scenario="reaper-spin"))
    assert not result.extra_failures, result.summary()  # the key was deleted
    assert result.check("queues").ok, result.summary()


@pytest.mark.parametrize("seed", [1, 2])
def test_a_read_repair_older_than_a_reap_does_not_bring_the_key_back(seed: int) -> None:
    """Found by the CI sweep when the sim's tombstone grace was 1 s (seed 158, wipe mix,
    then): a get's read repair, sent at its timeout, brought back a key whose tombstone
    had been reaped meanwhile. `python -m dynakv.sim --scenario reap-read-repair
    --seed 1` replays it as a script."""
    result = run(SimOptions(seed=seed, scenario="reap-read-repair"))
    assert not result.extra_failures, result.summary()  # the delete happened
    assert not result.failed, result.summary()


def test_a_late_reply_to_a_previous_life_is_not_taken_for_a_new_request() -> None:
    """Found by the long sweep (seed 100887, crashes): the simulation stopped on the
    ValueError. `python -m dynakv.sim --scenario request-id-reuse --seed 1` replays it
    as a script; checker 5 reports the exception and the node's crash."""
    result = run(SimOptions(seed=1, scenario="request-id-reuse"))
    assert not result.failed, result.summary()
