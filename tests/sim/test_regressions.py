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

HANDOFF_BACKOFF = SCENARIOS["handoff-backoff"]
REAPER_SPIN = SCENARIOS["reaper-spin"]
REAP_READ_REPAIR = SCENARIOS["reap-read-repair"]
REQUEST_ID_REUSE = SCENARIOS["request-id-reuse"]


@pytest.mark.parametrize("seed", [1, 2])
def test_a_fallback_never_reuses_a_dot_after_dropping_its_copy(seed: int) -> None:
    """Found by the sweep (seed 1258, wipe mix, before the fault plans were rescaled):
    `python -m dynakv.sim --scenario fallback-rewrite --seed 1` replays it."""
    result = run(SimOptions(seed=seed, scenario="fallback-rewrite"))
    assert not result.extra_failures, result.summary()  # all three writes were acked
    assert not result.failed, result.summary()


@pytest.mark.xfail(strict=True, reason=HANDOFF_BACKOFF.known_core_bug)
def test_hints_reach_an_owner_that_crashed_during_handoff_within_the_bound() -> None:
    """Found by the long sweep with convergence on (seed 100022, chaos, at the time: a batch of
    three deliveries timed out and the fallback waited 4 s, so checker 3 failed).
    `python -m dynakv.sim --scenario handoff-backoff --seed 1` replays it: the owner
    crashes with a batch of hints in flight; the fallbacks' backoffs reach 16-30 s."""
    result = run(SimOptions(seed=1, scenario="handoff-backoff"))
    assert not result.failed, result.summary()


@pytest.mark.xfail(strict=True, reason=REAPER_SPIN.known_core_bug)
def test_a_reap_waiting_for_a_lost_vote_does_not_spin() -> None:
    """Found when the sweep's reap interval was 200 ms (below the 1 s request timeout):
    virtual time stood still. `python -m dynakv.sim --scenario reaper-spin --seed 1`
    replays it; checker 5 reports the busy loop."""
    result = run(SimOptions(seed=1, scenario="reaper-spin"))
    assert not result.extra_failures, result.summary()  # the key was deleted
    assert result.check("queues").ok, result.summary()


@pytest.mark.xfail(strict=True, reason=REAP_READ_REPAIR.known_core_bug)
@pytest.mark.parametrize("seed", [1, 2])
def test_a_read_repair_older_than_a_reap_does_not_bring_the_key_back(seed: int) -> None:
    """Found by the CI sweep when the sim's tombstone grace was 1 s (seed 158, wipe mix,
    then): a get's read repair, sent at its timeout, brought back a key whose tombstone
    had been reaped meanwhile. `python -m dynakv.sim --scenario reap-read-repair
    --seed 1` replays it as a script."""
    result = run(SimOptions(seed=seed, scenario="reap-read-repair"))
    assert not result.extra_failures, result.summary()  # the delete happened
    assert not result.failed, result.summary()


@pytest.mark.xfail(strict=True, reason=REQUEST_ID_REUSE.known_core_bug)
def test_a_late_reply_to_a_previous_life_is_not_taken_for_a_new_request() -> None:
    """Found by the long sweep (seed 100887, crashes): the simulation stopped on the
    ValueError. `python -m dynakv.sim --scenario request-id-reuse --seed 1` replays it
    as a script; checker 5 reports the exception and the node's crash."""
    result = run(SimOptions(seed=1, scenario="request-id-reuse"))
    assert not result.failed, result.summary()


def test_the_known_bugs_still_fail_in_the_way_they_are_recorded() -> None:
    """Until the core is fixed, each known bug fails the way its reason says, so that
    the xfails above do not hide a scenario that broke for another reason. Delete the
    bug's half of this test together with its xfail mark when the core is fixed."""
    backoff = run(SimOptions(seed=2, scenario="handoff-backoff"))
    assert any("the hints still wait" in text for text in backoff.extra_failures), \
        backoff.summary()
    spin = run(SimOptions(seed=2, scenario="reaper-spin"))
    assert any("busy loop" in text for text in spin.check("queues").violations), \
        spin.summary()
    resurrection = run(SimOptions(seed=3, scenario="reap-read-repair"))
    assert any("live again" in text for text in resurrection.check("deletes").violations), \
        resurrection.summary()
    reuse = run(SimOptions(seed=2, scenario="request-id-reuse"))
    assert not reuse.extra_failures, reuse.summary()
    assert any("ValueError" in text for text in reuse.check("queues").violations), \
        reuse.summary()
