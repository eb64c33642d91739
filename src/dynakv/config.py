"""One Config object, documented, passed explicitly; presets for common settings.

Defaults come from the Dynamo paper and Riak: a ring of 64 partitions, N=3,
R=W=2 (quorum), gossip every second. Timeouts are in milliseconds (names carry
their unit last). Presets: `local` (one machine: short timeouts, for dev and
tests), `lan` (a data centre, the default), `wan` (long round trips).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class Config:
    # The cluster's name: nodes of another cluster are refused at the handshake.
    cluster_name: str = "dynakv"
    # Partitions in the ring: a power of two, fixed when the cluster is created.
    ring_size: int = 64
    # Replicas per key for buckets that do not set n_val.
    n_val: int = 3
    # A client request that gets no quorum in this time answers 503.
    request_timeout_ms: int = 10_000
    # How long a peer connection may take to open before the peer counts as down.
    connect_timeout_ms: int = 1_000
    # How often a down peer is probed (a reconnect attempt) until it answers.
    reconnect_interval_ms: int = 500
    # A coordinator sends a write to the other replicas while its own copy syncs, not
    # after (its own copy counts toward w once durable); a restart after a crash then
    # mints dots under a new actor epoch (Node._replicate says why).
    early_replication: bool = True
    # Group commit: at most this many writes in one storage transaction.
    group_commit_writes_max: int = 5_000
    # Gossip (core/membership.py): exchange cluster state with a random peer this often.
    gossip_interval_ms: int = 1_000
    # Failure detector (core/detector.py), phi accrual over probe replies: each peer
    # is pinged this often and its pongs are heartbeats; it is down once phi passes
    # phi_threshold (Cassandra's and Akka's 8), computed from its heartbeat gaps with
    # phi_acceptable_pause_ms added to their mean and their deviation at least
    # phi_min_std_deviation_ms. A silent peer is down after about
    # probe_interval_ms + phi_acceptable_pause_ms + 5.61 x deviation: 4.1 s here.
    probe_interval_ms: int = 1_000
    phi_threshold: float = 8.0
    phi_acceptable_pause_ms: int = 2_000
    phi_min_std_deviation_ms: int = 200
    # Sloppy quorum and hinted handoff (Cassandra's hinted_handoff_enabled): with it
    # off, writes go to the primary owners that are up, and no fallback keeps hints.
    hinted_handoff_enabled: bool = True
    # How often a fallback looks for hints to deliver to owners that are up again.
    handoff_interval_ms: int = 1_000
    # Anti-entropy (core/anti_entropy.py): start an exchange at most this often;
    # rebuild every tree from storage this often (catches disk rot); hash one page
    # of keys per build step this often (background building at start).
    anti_entropy_enabled: bool = True
    anti_entropy_interval_ms: int = 10_000
    anti_entropy_rebuild_interval_ms: int = 7 * 24 * 3600 * 1000
    anti_entropy_build_interval_ms: int = 10
    # Tombstones (core/tombstones.py): reaped once this old and held by every
    # replica; the reaper looks at a page of tombstones this often.
    tombstone_grace_ms: int = 24 * 3600 * 1000
    tombstone_reap_interval_ms: int = 60_000

    def with_options(self, **changes: Any) -> Config:
        known = {field.name for field in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown config option(s): {', '.join(unknown)}")
        return replace(self, **changes)


PRESETS: dict[str, Config] = {
    "local": Config(request_timeout_ms=5_000, connect_timeout_ms=500, reconnect_interval_ms=250,
                    probe_interval_ms=250, phi_acceptable_pause_ms=500,
                    phi_min_std_deviation_ms=50, handoff_interval_ms=250,
                    gossip_interval_ms=200,
                    anti_entropy_interval_ms=100, anti_entropy_rebuild_interval_ms=3600 * 1000,
                    tombstone_grace_ms=10_000, tombstone_reap_interval_ms=1_000),
    "lan": Config(),
    "wan": Config(request_timeout_ms=30_000, connect_timeout_ms=5_000, reconnect_interval_ms=2_000,
                  probe_interval_ms=2_000, phi_acceptable_pause_ms=8_000,
                  phi_min_std_deviation_ms=500),
}


def preset(name: str) -> Config:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
