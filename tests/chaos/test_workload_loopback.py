"""The chaos workload and checker against three real nodes on 127.0.0.1: one node is
SIGKILLed and restarted mid-run; nothing acknowledged may be lost, nothing may appear
that was not written, and the replicas must converge. Then, for contrast, a run on a
last_write_wins bucket, whose read-modify-write writers clobber each other."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.checker import CheckResult, OpType, Outcome, check_cluster
from tests.chaos.workload import WorkloadConfig, WorkloadThread
from tests.cluster.harness import ProcessCluster

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(150)]

RUN_S = 14.0
KILL_AT_S = 4.0
DOWN_S = 3.0
CONVERGE_TIMEOUT_S = 45.0


@pytest.fixture
def three(tmp_path: Path) -> Iterator[ProcessCluster]:
    nodes = ProcessCluster(tmp_path, size=3)
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()


def run(cluster: ProcessCluster, config: WorkloadConfig, kill: int | None) -> CheckResult:
    workload = WorkloadThread(config)
    started = time.monotonic()
    workload.start()
    if kill is not None:
        time.sleep(KILL_AT_S)
        cluster.kill(kill)
        time.sleep(DOWN_S)
        cluster.start(kill)  # the same command, data and ports; waits until all see it up
    history = workload.join(max(0.0, config.duration_s - (time.monotonic() - started)) + 30)
    assert history, "the workload recorded nothing"
    healed = time.monotonic()
    result = check_cluster(list(config.urls), config.layout, history, lww=config.lww,
                           heal_s=healed, converge_timeout_s=CONVERGE_TIMEOUT_S,
                           seed=config.seed)
    print(result.report())
    outcomes = Counter((op.type, op.outcome) for op in history)
    print(sorted(outcomes.items()))
    return result


def test_sigkill_and_restart_loses_nothing_acknowledged(three: ProcessCluster) -> None:
    urls = tuple(node.url for node in three.nodes)
    config = WorkloadConfig(urls, seed=7, run_id="kill", duration_s=RUN_S,
                            request_timeout_s=2.0)
    result = run(three, config, kill=1)
    assert result.lost == 0, result.report()
    assert result.unexpected == 0 and result.failed_present == 0, result.report()
    assert result.unreadable == 0, result.report()
    assert result.converged, result.report()
    assert result.ok
    # Not vacuous: writes of both kinds were acknowledged, and the kill was felt.
    assert result.acknowledged >= 100, result.report()
    assert result.indeterminate + result.failed > 0, "the kill went unnoticed"


def test_last_write_wins_loses_acknowledged_elements(three: ProcessCluster) -> None:
    urls = tuple(node.url for node in three.nodes)
    config = WorkloadConfig(urls, seed=8, run_id="lww", duration_s=5.0, set_keys=1,
                            set_writers=4, unique_writers=1, readers=1, lww=True)
    result = run(three, config, kill=None)
    assert result.lww and result.unexpected == 0 and result.converged, result.report()
    acked_adds = result.acknowledged  # includes unique puts, which LWW does not harm
    assert acked_adds > 0
    assert result.lost > 0, "concurrent read-modify-writes on a last_write_wins bucket " \
        "lost nothing: the contrast shows nothing"
    assert all(finding.op is not None and finding.op.type is OpType.SET_ADD
               and finding.op.outcome is Outcome.OK for finding in result.lost_details)
