"""The chaos schedules end to end: five namespaced nodes, the workload, the nemesis, the
checker (tests/chaos/run.py). The short schedule runs in `make test` (about three
minutes), the long one under `make long`. Skipped, naming what is missing, without
root or the kernel's namespaces, veth, bridge or nftables. CHAOS_SEED picks another
seed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.chaos import nemesis as nm
from tests.chaos.netns import unavailable_reason
from tests.chaos.run import ChaosRun, run_chaos

SEED = int(os.environ.get("CHAOS_SEED", "1"))


def _run(kind: str, root: Path) -> ChaosRun:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    run = run_chaos(nm.make_schedule(kind, SEED), root)
    print("\n".join(run.nemesis_log))
    for outcome in (run.main, run.contrast):
        if outcome is not None:
            print(outcome.result.report())
            print(outcome.line())
    return run


def _assert_nothing_lost(run: ChaosRun) -> None:
    result = run.main.result
    # Not vacuous: the faults were felt and plenty was acknowledged.
    assert result.acknowledged >= 200, result.report()
    assert result.indeterminate + result.failed > 0, "no fault was felt by any client"
    assert result.lost == 0, result.report()
    assert result.unexpected == 0 and result.failed_present == 0, result.report()
    assert result.unreadable == 0, result.report()
    assert result.converged, result.report()
    assert run.contrast is not None
    contrast = run.contrast.result
    # The contrast bucket's losses are reported, not judged; nothing may appear there
    # that was not written, and it converges too.
    assert contrast.lww and contrast.unexpected == 0, contrast.report()
    assert contrast.converged, contrast.report()


@pytest.mark.cluster
@pytest.mark.timeout(480)
def test_short_schedule_loses_nothing(tmp_path: Path) -> None:
    _assert_nothing_lost(_run("short", tmp_path))


@pytest.mark.cluster
@pytest.mark.long
@pytest.mark.timeout(1800)
def test_long_schedule_loses_nothing(tmp_path: Path) -> None:
    _assert_nothing_lost(_run("long", tmp_path))
