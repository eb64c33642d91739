"""The named scenarios (Dynamo paper, Jepsen's Riak analysis, issues 3 and 5) pass
every checker and their own checks, for several seeds. Scenarios with a known core
bug are expected to fail, in test_regressions.py.

A scenario's own checks are meant to fail when what it exercises is broken: the
tests at the end break hinted handoff, anti-entropy and the reaper's votes in the
core (monkeypatched, for the test only) and expect the scenario to notice."""

from __future__ import annotations

import pytest

from dynakv.core.node import Node
from dynakv.core.tombstones import REAP_PAGE_KEYS, TOMBSTONES_PARTITION, parse_tombstone_row
from dynakv.sim import runner
from dynakv.sim.runner import SimOptions, run
from dynakv.sim.scenarios import SCENARIOS

PASSING = sorted(name for name, scenario in SCENARIOS.items() if not scenario.known_core_bug)
ISSUE_3 = ("fallback-crash", "owner-returns-during-handoff")
ISSUE_5 = ("wipe-repair", "long-partition-hints-lost", "delete-races-repair")


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("name", PASSING)
def test_scenario(name: str, seed: int) -> None:
    result = run(SimOptions(seed=seed, scenario=name))
    assert not result.failed, result.summary()
    assert result.check("convergence").enabled
    replay = f"python -m dynakv.sim --seed {seed} --scenario {name}"
    assert result.options.replay_command() == replay


def test_the_issue_scenarios_are_registered() -> None:
    assert set(ISSUE_3 + ISSUE_5) <= set(PASSING)


def test_fallback_crash_notices_hints_that_are_never_delivered(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Node, "_handoff", lambda self: None)
    result = run(SimOptions(seed=1, scenario="fallback-crash"))
    assert any("still queues hints" in text for text in result.extra_failures), \
        result.summary()
    assert any("still held by fallback" in text for text in result.extra_failures)


def test_wipe_repair_notices_when_anti_entropy_does_not_run(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "SIM_CONFIG",
                        runner.SIM_CONFIG.with_options(anti_entropy_enabled=False))
    result = run(SimOptions(seed=1, scenario="wipe-repair"))
    assert not result.check("convergence").ok, result.summary()
    assert any("are not back on its disk" in text for text in result.extra_failures)


def test_delete_races_repair_catches_a_resurrection(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reaper that drops each tombstone once its grace is over, asking nobody (the
    classic mistake), while a replica that missed the delete is down: when it returns,
    anti-entropy spreads its old value again, and checker 6 fails."""

    def reap_alone(self: Node) -> None:
        for row, written in self._scan(TOMBSTONES_PARTITION, b"", REAP_PAGE_KEYS):
            if self.now_ms - int.from_bytes(written, "big") >= self.config.tombstone_grace_ms:
                self._delete_local(*parse_tombstone_row(row))

    monkeypatch.setattr(Node, "_reap", reap_alone)
    result = run(SimOptions(seed=1, scenario="delete-races-repair"))
    check = result.check("deletes")
    assert not check.ok, result.summary()
    assert any("live again" in text for text in check.violations)
