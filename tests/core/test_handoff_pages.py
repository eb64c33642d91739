"""Ownership handoff of partitions holding more keys than one transfer batch.

Regression: the storage scan with the node's pending writes laid over it returned an
empty page when the pending deletes of the batch just acknowledged covered the whole
page it read from storage, so a transfer ended after its first batch and the old
owner kept the rest of the partition (found by tests/cluster/test_scaling.py).
"""

from __future__ import annotations

from dynakv.config import Config
from dynakv.core import api
from dynakv.core.handoff import TRANSFER_BATCH_KEYS
from tests.core.instant import InstantCluster

RING_SIZE = 4
KEYS = 3 * RING_SIZE * TRANSFER_BATCH_KEYS  # about three batches per partition
CONFIG = Config(ring_size=RING_SIZE, gossip_interval_ms=100, handoff_interval_ms=100,
                anti_entropy_enabled=False, request_timeout_ms=2_000)


def test_a_leaver_streams_every_batch_of_its_partitions() -> None:
    cluster = InstantCluster(["a", "b", "c", "d"], ring_size=RING_SIZE, config=CONFIG)
    for i in range(KEYS):
        put = cluster.request("abcd"[i % 4], api.PutRequest(
            "default", "b", f"k{i}", api.Content(f"v{i}".encode()), w=3))
        assert isinstance(put, api.DoneResponse)
    held = sum(len(cluster.storage["d"].scan(p, b"", 10 * KEYS)) for p in range(RING_SIZE))
    assert held > 2 * TRANSFER_BATCH_KEYS
    assert isinstance(cluster.request("a", api.LeaveRequest("d")), api.DoneResponse)
    cluster.advance(500)
    plan = cluster.request("a", api.PlanRequest())
    assert isinstance(plan, api.StatusResponse)
    done = cluster.request("a", api.CommitRequest(plan.status["ring_version"],
                                                  tuple(plan.status["owners"])))
    assert isinstance(done, api.DoneResponse), done
    cluster.advance(5_000)
    leaver = cluster.nodes["d"]
    assert not leaver.transfers and not leaver._transfer_candidates
    left = {p: len(cluster.storage["d"].scan(p, b"", 10 * KEYS)) for p in range(RING_SIZE)}
    assert sum(left.values()) == 0, f"the leaver kept keys after its transfers: {left}"
    for i in range(KEYS):
        got = cluster.request("b", api.GetRequest("default", "b", f"k{i}", r=3))
        assert isinstance(got, api.ObjectResponse)
        assert [s.value for s in got.siblings] == [f"v{i}".encode()]
