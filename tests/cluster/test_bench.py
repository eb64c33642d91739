"""`dynakv bench` against a real three-node cluster: a short run does operations and
prints one JSON object of the documented shape."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.cluster.harness import ProcessCluster

pytestmark = pytest.mark.cluster


def test_bench_runs_workload_a_against_a_cluster(cluster: ProcessCluster) -> None:
    argv = [sys.executable, "-m", "dynakv", "bench", "--workload", "A", "--concurrency", "8",
            "--duration", "2", "--warmup", "0.5", "--keys", "200", "--json",
            *(arg for index in range(3) for arg in ("--url", cluster.url(index)))]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ops"] > 0 and report["ops_per_s"] > 0
    assert report["errors"] == 0, report["error_kinds"]
    assert 0 < report["p50_ms"] <= report["p99_ms"] <= report["p99_9_ms"]
    assert set(report["operations"]) == {"read", "update"}
    assert report["reads_not_found"] == 0  # the load phase wrote every record
    assert report["siblings_per_read"] >= 1.0
    assert "load" in done.stderr  # progress went to stderr


def test_bench_reports_an_unreachable_node_clearly() -> None:
    argv = [sys.executable, "-m", "dynakv", "bench", "--url", "http://127.0.0.1:9",
            "--duration", "1", "--keys", "10", "--quiet"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "bench:" in done.stderr and "Traceback" not in done.stderr
