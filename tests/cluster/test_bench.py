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
    check_run(argv)
    # the same records over the Protocol Buffers API, writes only, two generator processes
    argv = [sys.executable, "-m", "dynakv", "bench", "--workload", "W", "--concurrency", "4",
            "--processes", "2", "--duration", "1", "--warmup", "0", "--keys", "200",
            "--no-load", "--json", *(arg for node in cluster.nodes for arg in ("--url",
                                                                            node.pb_url))]
    report = check_run(argv, operations={"write"})
    assert report["protocol"] == "pb" and report["processes"] == 2


def check_run(argv: list[str], operations: set[str] | None = None) -> dict[str, object]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ops"] > 0 and report["ops_per_s"] > 0
    assert report["errors"] == 0, report["error_kinds"]
    assert 0 < report["p50_ms"] <= report["p99_ms"] <= report["p99_9_ms"]
    assert set(report["operations"]) == (operations or {"read", "update"})
    if operations is None:
        assert report["reads_not_found"] == 0  # the load phase wrote every record
        assert report["siblings_per_read"] >= 1.0
        assert "load" in done.stderr  # progress went to stderr
    result: dict[str, object] = report
    return result


def test_bench_reports_an_unreachable_node_clearly() -> None:
    argv = [sys.executable, "-m", "dynakv", "bench", "--url", "http://127.0.0.1:9",
            "--duration", "1", "--keys", "10", "--quiet"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "bench:" in done.stderr and "Traceback" not in done.stderr
