"""The scale study's script (dynakv.sim.scale) at small sizes: seeded, and checked
against the properties docs/scale.md reports, not timings."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from dynakv.sim import scale


def test_ring_sizes_follow_the_cluster_size() -> None:
    assert [scale.ring_size_for(n) for n in (10, 100, 1000)] == [1 << 14, 1 << 15, 1 << 16]


@pytest.mark.parametrize("zones", [1, 3])
def test_claim_measures_balance_and_movement(zones: int) -> None:
    report = scale.measure_claim(12, seed=3, keys=20_000, zones=zones, ring_size=1024)
    assert report.ring_size == 1024
    assert report.violations <= 2 and report.join_violations <= report.violations
    if zones == 1:  # weight rules partitions; with 3 zones each zone owns a third
        assert report.partitions_balance > 0.95
    assert report.join_partitions_moved <= math.ceil(1.1 * report.join_partitions_ideal)
    assert report.leave_partitions_moved <= math.ceil(1.1 * report.leave_partitions_ideal)
    assert 0 < report.join_data_moved <= 1.5 * report.join_data_ideal
    assert 0 < report.leave_data_moved <= 1.5 * report.leave_data_ideal


def test_gossip_spreads_a_join_in_logarithmic_rounds_and_counts_bytes() -> None:
    first = scale.measure_gossip(40, seed=5, ring_size=256)
    again = scale.measure_gossip(40, seed=5, ring_size=256)
    # Seeded: the same run again (CPU timings aside).
    assert (again.rounds_join_known, again.change_bytes_per_node) == (
        first.rounds_join_known, first.change_bytes_per_node)
    assert 0 < first.rounds_join_known <= 2 * math.log2(40) + 2
    assert 0 < first.rounds_ring_known <= 2 * math.log2(40) + 2
    assert first.steady_messages_per_node_s == pytest.approx(1.0, abs=0.1)
    assert first.steady_bytes_per_node_s == pytest.approx(first.digest_bytes, rel=0.1)
    assert first.state_bytes > 256 * 4  # the ring's owners dominate a state
    assert first.change_bytes_per_node >= first.state_bytes  # each node got a state at least
    assert first.detector_messages_per_node_s == 2 * 39


def test_command_writes_a_report_and_plots(tmp_path: Path) -> None:
    assert scale.main(["--nodes", "4", "8", "--keys-per-node", "50", "--gossip-seeds", "1",
                       "--zones", "1", "--json", str(tmp_path / "r.json"),
                       "--plots", str(tmp_path / "plots")]) == 0
    data = json.loads((tmp_path / "r.json").read_text())
    assert [c["nodes"] for c in data["claims"]] == [4, 8]
    assert {p.name for p in (tmp_path / "plots").iterdir()} == {
        "balance.png", "movement.png", "gossip-rounds.png", "membership-cost.png"}


def test_command_refuses_bad_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        scale.main(["--nodes", "1"])
    assert "--nodes must be 2 or more" in capsys.readouterr().err


@pytest.mark.long
def test_a_thousand_nodes_on_two_to_the_sixteen_partitions() -> None:
    """The largest size of docs/scale.md (make long; minutes of CPU)."""
    claimed = scale.measure_claim(1000, seed=1, keys=1_000_000)
    assert claimed.ring_size == 1 << 16 and claimed.violations <= 2
    assert claimed.partitions_balance > 0.9
    assert claimed.join_partitions_moved <= math.ceil(1.1 * claimed.join_partitions_ideal)
    assert claimed.leave_partitions_moved <= math.ceil(1.1 * claimed.leave_partitions_ideal)
    gossip = scale.measure_gossip(1000, seed=1)
    assert gossip.rounds_join_known <= 2 * math.log2(1000) + 2
    assert gossip.rounds_ring_known <= 2 * math.log2(1000) + 2
