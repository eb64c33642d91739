"""The phi accrual failure detector (core/detector.py)."""

from __future__ import annotations

import math
import random

import pytest

from dynakv.core import limits
from dynakv.core.detector import FailureDetector, phi, threshold_z
from dynakv.core.node import TickEvent
from tests.core.instant import InstantCluster


def steady(detector: FailureDetector, peer: str, start_ms: int, gaps: list[int]) -> int:
    now = start_ms
    for gap in gaps:
        now += gap
        detector.heartbeat(peer, now)
    return now


def test_phi_grows_with_silence_and_threshold_8_is_5_61_deviations() -> None:
    values = [phi(t, 1_000, 100) for t in range(0, 3_000, 100)]
    assert values == sorted(values)
    assert phi(1_000, 1_000, 100) == pytest.approx(-math.log10(0.5))
    assert threshold_z(8.0) == pytest.approx(5.612, abs=0.001)
    assert phi(1_000 + 5.62 * 100, 1_000, 100) > 8 > phi(1_000 + 5.60 * 100, 1_000, 100)


def test_a_silent_peer_is_down_at_the_documented_time_and_not_before() -> None:
    detector = FailureDetector(["b"], 1_000, 0, acceptable_pause_ms=2_000,
                               min_std_deviation_ms=200)
    last = steady(detector, "b", 0, [1_000] * 20)
    expected = 1_000 + 2_000 + 5.612 * 200  # the docstring's lan figure, about 4.1 s
    assert detector.detection_time_ms("b") == pytest.approx(expected, abs=2)
    assert detector.detection_time_ms() == detector.detection_time_ms("b")
    down_at = last + detector.detection_time_ms("b")
    assert detector.expire(down_at - 1) == [] and detector.is_up("b")
    assert detector.next_deadline_ms() is not None
    assert detector.expire(down_at) == ["b"] and not detector.is_up("b")
    assert detector.down_peers() == ["b"]


def test_a_pause_of_the_node_itself_convicts_nobody_at_the_next_check() -> None:
    """A node that did not run for a while (a stall, a starved process) has not read what
    its peers sent meanwhile; convicting them at its first check would mark live peers
    down and send their requests to fallbacks. That check convicts nobody; the next
    one, once the backlog is read, convicts only peers still silent."""
    alive = FailureDetector(["b"], 1_000, 0, acceptable_pause_ms=2_000,
                            min_std_deviation_ms=200)
    assert alive.local_pause_ms == 3_000
    last = steady(alive, "b", 0, [1_000] * 20)
    assert alive.expire(last) == []
    assert alive.expire(last + 10_000) == [] and alive.is_up("b")  # paused 10 s
    assert alive.local_pauses == 1
    alive.heard_from("b", last + 10_000)  # what b sent meanwhile, read now
    assert alive.expire(last + 10_001) == [] and alive.is_up("b")

    dead = FailureDetector(["b"], 1_000, 0, acceptable_pause_ms=2_000,
                           min_std_deviation_ms=200)
    last = steady(dead, "b", 0, [1_000] * 20)
    assert dead.expire(last) == []
    assert dead.expire(last + 10_000) == []
    assert dead.expire(last + 10_001) == ["b"]  # nothing came in: convicted now
    # Checks at most local_pause_ms apart are not pauses.
    steady_checks = FailureDetector(["b"], 1_000, 0, acceptable_pause_ms=2_000,
                                    min_std_deviation_ms=200)
    last = steady(steady_checks, "b", 0, [1_000] * 20)
    down_at = last + steady_checks.detection_time_ms("b")
    now = last
    while now < down_at:
        assert steady_checks.expire(now) == []
        now = min(now + 3_000, down_at)
    assert steady_checks.expire(down_at) == ["b"] and steady_checks.local_pauses == 0


def test_a_jittery_link_is_suspected_later_than_a_steady_one() -> None:
    rng = random.Random(7)
    detector = FailureDetector(["steady", "jittery"], 1_000, 0, min_std_deviation_ms=10)
    steady(detector, "steady", 0, [1_000] * 100)
    steady(detector, "jittery", 0, [rng.randint(500, 1_500) for _ in range(100)])
    assert detector.detection_time_ms("jittery") > detector.detection_time_ms("steady") + 1_000


def test_heard_from_brings_a_peer_up_and_the_outage_is_not_a_gap() -> None:
    detector = FailureDetector(["b"], 1_000, 0)
    last = steady(detector, "b", 0, [1_000] * 10)
    before = detector.detection_time_ms("b")
    assert detector.connection("b", False, last + 10)  # a reset connection: down at once
    assert not detector.connection("b", False, last + 20)
    assert detector.heartbeat("b", last + 600_000)  # back after ten minutes
    detector.heartbeat("b", last + 601_000)
    assert detector.is_up("b") and detector.detection_time_ms("b") == before


def test_the_window_of_gaps_is_bounded() -> None:
    detector = FailureDetector(["b"], 1_000, 0, min_std_deviation_ms=1)
    steady(detector, "b", 0, [5_000] * 50 + [1_000] * limits.PHI_WINDOW_SAMPLES)
    # The 5 s gaps have left the window: only the 1 s ones count.
    assert detector.detection_time_ms("b") == pytest.approx(1_000 + 5.612, abs=2)


def test_probes_go_out_once_per_interval_also_to_down_peers() -> None:
    detector = FailureDetector(["b", "c"], 1_000, 0)
    assert detector.probes_due(0) == ["b", "c"]
    assert detector.probes_due(999) == []
    detector.connection("c", False, 500)
    assert detector.probes_due(1_000) == ["b", "c"]
    detector.set_peers(["c", "d"], 1_200)
    assert detector.probes_due(1_200) == ["d"] and detector.up_peers() == {"d"}


def exact_deadline(detector: FailureDetector) -> int | None:
    """next_deadline_ms computed afresh (the detector keeps it between ticks)."""
    fresh = FailureDetector([], detector.probe_interval_ms, 0,
                            threshold=detector.threshold,
                            acceptable_pause_ms=detector.acceptable_pause_ms,
                            min_std_deviation_ms=detector.min_std_deviation_ms)
    fresh._peers = detector._peers
    return fresh.next_deadline_ms()


@pytest.mark.parametrize("seed", range(60))
def test_the_kept_deadline_is_never_late_and_exact_after_a_tick(seed: int) -> None:
    """The node asks for the next deadline after every event; the detector recomputes
    it only after a tick, a pong or a change of state. Whatever the events, the deadline
    it gives is never later than the exact one (a detection would be late), and after
    a tick it is the exact one (an early deadline in the past would make the node tick
    in a loop)."""
    rng = random.Random(seed)
    peers = ["a", "b", "c"]
    # Small pauses and deviations: suspicions often come before the next probe.
    detector = FailureDetector(peers, 1_000, 0, acceptable_pause_ms=0,
                               min_std_deviation_ms=10)
    now = 0
    for _ in range(400):
        now += rng.choice([0, 1, 20, 50, 400, 1_000, 3_000])
        peer = rng.choice(peers)
        event = rng.choice(["heard", "heard", "heard", "pong", "tick", "lost", "peers"])
        if event == "heard":
            detector.heard_from(peer, now)
        elif event == "pong":
            detector.heartbeat(peer, now)
        elif event == "lost":
            detector.connection(peer, False, now)
        elif event == "peers":
            detector.set_peers(rng.sample(peers, rng.randint(1, 3)), now)
        kept, exact = detector.next_deadline_ms(), exact_deadline(detector)
        assert (kept is None) == (exact is None)
        assert kept is None or exact is None or kept <= exact
        if event == "tick":
            detector.expire(now)
            detector.probes_due(now)
            assert detector.next_deadline_ms() == exact_deadline(detector)


def test_a_nodes_status_counts_the_checks_skipped_after_its_own_pauses() -> None:
    cluster = InstantCluster(["a", "b", "c"])
    cluster.advance(5_000)
    a = cluster.nodes["a"]
    assert a.status()["failure_detector"] == {"local_pauses": 0}
    a.step(TickEvent(), cluster.now_ms + 30_000)  # a did not run for 30 s
    assert a.status()["failure_detector"] == {"local_pauses": 1}
    assert not a.detector.down_peers()
