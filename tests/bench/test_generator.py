"""The load generator's pure parts: workload mixes, key choosers, histogram merge and
the report's shape. Fast, no servers (a stand-in driver in memory)."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter

import pytest

from dynakv.bench import drivers, runner
from dynakv.bench.command import build_report, merge
from dynakv.bench.histogram import Latencies
from dynakv.bench.runner import BenchConfig, LocalTally, Outcome, Part, run_clients
from dynakv.bench.workload import (
    WORKLOADS,
    Op,
    ScrambledZipfianKeys,
    UniformKeys,
    Values,
    ZipfianRanks,
    key_chooser,
    workload,
    zeta,
)


@pytest.mark.parametrize(("name", "reads", "updates", "writes"),
                         [("A", 0.5, 0.5, 0.0), ("B", 0.95, 0.05, 0.0),
                          ("C", 1.0, 0.0, 0.0), ("W", 0.0, 0.0, 1.0)])
def test_workload_mix_ratios(name: str, reads: float, updates: float, writes: float) -> None:
    rng = random.Random(7)
    draws = 100_000
    counts = Counter(WORKLOADS[name].choose(rng) for _ in range(draws))
    for op, expected in ((Op.READ, reads), (Op.UPDATE, updates), (Op.WRITE, writes)):
        assert abs(counts[op] / draws - expected) < 0.01, (op, counts)
    if expected == 0.0:
        assert counts[op] == 0


def test_unknown_workload_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown workload"):
        workload("Z")
    with pytest.raises(ValueError, match="unknown distribution"):
        key_chooser("pareto", 10)


def test_zipfian_ranks_follow_the_zipf_law() -> None:
    items = 1000
    ranks = ZipfianRanks(items)
    rng = random.Random(3)
    draws = 200_000
    counts = Counter(ranks.next(rng) for _ in range(draws))
    assert all(0 <= rank < items for rank in counts)
    assert abs(sum(ranks.probability(rank) for rank in range(items)) - 1.0) < 1e-9
    # ranks 0 and 1 are exact in Gray's method; the others are approximated (within 20%)
    for rank, tolerance in ((0, 0.03), (1, 0.03), (2, 0.2), (9, 0.2), (99, 0.2)):
        expected = ranks.probability(rank) * draws
        assert abs(counts[rank] - expected) < tolerance * expected, rank
    # popular ranks really are popular: the top 10% of ranks get their share of draws
    top = sum(counts[rank] for rank in range(items // 10))
    expected_top = sum(ranks.probability(rank) for rank in range(items // 10))
    assert abs(top / draws - expected_top) < 0.03
    assert counts[0] > counts[1] > counts[9] > counts[99]


def test_zeta_matches_its_definition() -> None:
    assert zeta(1, 0.99) == 1.0
    assert abs(zeta(3, 0.5) - (1 + 2 ** -0.5 + 3 ** -0.5)) < 1e-12


def test_scrambled_zipfian_spreads_hot_keys_and_stays_in_range() -> None:
    items = 10_000
    keys = ScrambledZipfianKeys(items)
    rng = random.Random(5)
    counts = Counter(keys.next(rng) for _ in range(50_000))
    assert all(0 <= key < items for key in counts)
    hottest = [key for key, _ in counts.most_common(5)]
    assert keys.record_of(0) == hottest[0]
    assert hottest != sorted(hottest) or max(hottest) > items // 10  # not the first records
    assert counts.most_common(1)[0][1] > 50_000 * 0.05  # skewed, unlike uniform


def test_uniform_keys_cover_the_space_evenly() -> None:
    keys = UniformKeys(10)
    rng = random.Random(1)
    counts = Counter(keys.next(rng) for _ in range(50_000))
    assert set(counts) == set(range(10))
    assert max(counts.values()) - min(counts.values()) < 700


def test_values_have_the_size_and_differ() -> None:
    values = Values(100, random.Random(1))
    first, second = values.next(), values.next()
    assert len(first) == len(second) == 100 and first != second
    assert len(Values(3, random.Random(1)).next()) == 3


def test_histograms_merge_across_processes() -> None:
    one, two = Latencies(), Latencies()
    for value in range(1, 1001):
        one.record_us(value)  # 1 us .. 1 ms
    for _ in range(1000):
        two.record_us(100_000)  # 100 ms
    parts = [Part(histograms={"read": one.encode()}), Part(histograms={"update": two.encode()})]
    per_op, overall = merge(parts)
    assert per_op["read"].count == 1000 and per_op["update"].count == 1000
    assert overall.count == 2000
    assert overall.percentile_ms(25) == pytest.approx(0.5, rel=0.01)
    assert overall.percentile_ms(99) == pytest.approx(100.0, rel=0.01)
    assert Latencies.decode(one.encode()).summary() == one.summary()


def sample_outcome() -> tuple[BenchConfig, Outcome]:
    latencies = Latencies()
    for value in (500, 1000, 2000, 40_000):
        latencies.record_us(value)
    part = Part(histograms={"read": latencies.encode()}, requests=4, reads=4, siblings=6,
                siblings_max=3, reads_with_siblings=1, elapsed_s=2.0,
                errors={"BenchError": 2})
    config = BenchConfig((drivers.Target("http", "http://127.0.0.1:1"),), duration_s=2.0)
    return config, Outcome([part], 1.5, (1.0, 1.0, 1.0), (2.0, 2.0, 2.0))


def test_json_report_shape() -> None:
    config, outcome = sample_outcome()
    report = json.loads(json.dumps(build_report(config, outcome)))
    for name in ("ops_per_s", "p50_ms", "p99_ms", "p99_9_ms", "siblings_per_read",
                 "operations", "errors", "load_average", "histogram", "workload"):
        assert name in report, name
    assert report["ops"] == 4 and report["ops_per_s"] == 2.0
    assert report["siblings_per_read"] == 1.5 and report["siblings_max"] == 3
    assert report["errors"] == 2 and report["error_kinds"] == {"BenchError": 2}
    assert report["p50_ms"] == pytest.approx(1.0, rel=0.01)
    assert report["operations"]["read"]["count"] == 4
    assert Latencies.decode(report["histogram"].encode()).count == 4


class MemoryDriver:
    """A store in a dict that counts what it is asked, with dynakv-like contexts."""

    def __init__(self) -> None:
        self.data: dict[str, tuple[int, bytes]] = {}
        self.calls: Counter[str] = Counter()
        self.contexts_seen: list[bytes | None] = []

    async def read(self, key: str) -> tuple[bytes | None, int]:
        self.calls["read"] += 1
        await asyncio.sleep(0)
        if key not in self.data:
            return None, 0
        return str(self.data[key][0]).encode(), 1

    async def write(self, key: str, value: bytes, context: bytes | None) -> bytes | None:
        self.calls["write"] += 1
        self.contexts_seen.append(context)
        await asyncio.sleep(0)
        version = self.data.get(key, (0, b""))[0] + 1
        self.data[key] = (version, value)
        return str(version).encode()

    async def close(self) -> None:
        pass


def run_against_memory(monkeypatch: pytest.MonkeyPatch, name: str) -> tuple[Part, MemoryDriver]:
    store = MemoryDriver()
    monkeypatch.setattr(runner, "make_driver", lambda target, connections: store)
    config = BenchConfig((drivers.Target("http", "http://memory"),), workload=name,
                         concurrency=4, duration_s=0.2, warmup_s=0.05, keys=50)
    asyncio.run(runner.load_phase(config, LocalTally()))
    assert len(store.data) == 50
    store.calls.clear()
    store.contexts_seen.clear()
    part = asyncio.run(run_clients(config, 0, LocalTally(), lambda: None))
    return part, store


def test_updates_read_then_write_back_the_context(monkeypatch: pytest.MonkeyPatch) -> None:
    part, store = run_against_memory(monkeypatch, "A")
    updates = Latencies.decode(part.histograms["update"]).count
    reads = Latencies.decode(part.histograms["read"]).count
    assert updates > 0 and reads > 0
    assert part.requests == reads + 2 * updates
    assert part.reads == reads + updates  # every update reads first
    assert store.contexts_seen and all(context for context in store.contexts_seen)
    assert part.siblings == part.reads  # one sibling each: the memory store has no siblings


def test_writes_pass_the_last_context_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    part, store = run_against_memory(monkeypatch, "W")
    assert set(part.histograms) == {"write"} and store.calls["read"] <= 1  # the probe
    # the first write of a key in this process has no context (nor do the writes racing
    # with it, one per other client at most); later ones pass one
    assert sum(context is None for context in store.contexts_seen) <= 50 + 3
    assert sum(context is not None for context in store.contexts_seen) > 0


def test_clients_are_split_over_processes() -> None:
    config = BenchConfig((drivers.Target("http", "http://x"),), concurrency=50, processes=3)
    shares = [config.clients_of(index) for index in range(3)]
    assert [len(share) for share in shares] == [17, 17, 16]
    assert sorted(n for share in shares for n in share) == list(range(50))


def test_bad_settings_are_refused() -> None:
    target = (drivers.Target("http", "http://x"),)
    for config in (BenchConfig(target, concurrency=0), BenchConfig(target, processes=0),
                   BenchConfig(target, keys=0), BenchConfig(target, value_size=0),
                   BenchConfig(target, duration_s=0), BenchConfig((), workload="A")):
        with pytest.raises(ValueError):
            config.check()
    assert drivers.protocol_of("redis://h:1", None) == "redis"
    assert drivers.protocol_of("http://h:1", None) == "http"
    with pytest.raises(ValueError):
        drivers.protocol_of("redis://h:1", "http")
