"""Every bound dynakv enforces, in one place, each with the reason for its value.

Past a bound the node answers a clear error (HTTP 400/413/503) instead of growing
memory without limit (TigerBeetle's static limits; uvicorn's limit_concurrency).
"""

from __future__ import annotations

# Keys: the bucket type, bucket and key, encoded together (msgpack, a few bytes
# of framing), are stored as one LMDB key behind a 4-byte partition prefix, and
# LMDB refuses keys above 511 bytes. So: at most 480 bytes together.
FULL_KEY_SIZE_MAX_BYTES = 480
KEY_SIZE_MAX_BYTES = FULL_KEY_SIZE_MAX_BYTES
# Bucket and bucket type names share the key's reasoning.
BUCKET_NAME_SIZE_MAX_BYTES = 255
# Values: Riak warns at 5 MiB and refuses at 50 MiB; large objects hurt every
# replica's latency. We refuse past 16 MiB, which also bounds internode frames.
VALUE_SIZE_MAX_BYTES = 16 * 1024 * 1024
# User metadata (X-Riak-Meta-*, links, indexes) per sibling.
METADATA_SIZE_MAX_BYTES = 64 * 1024
# Siblings per key: Riak's max_siblings default is 100. A write that would leave
# more live siblings than this is refused (HTTP 409) until a client resolves them
# by writing back with the context of a read.
SIBLINGS_PER_KEY_MAX = 100
# One internode frame carries at most one object with all its siblings, plus
# headers: bounded by the value and sibling limits, with room for a batch.
FRAME_SIZE_MAX_BYTES = 64 * 1024 * 1024
# One frame of the PB client API (net/pb_api.py): a put carries one value and its
# metadata, so the value bound plus room for metadata and names. A longer length
# is refused before anything is buffered, and the connection closed.
PB_FRAME_SIZE_MAX_BYTES = VALUE_SIZE_MAX_BYTES + 1024 * 1024
# Requests one PB connection may have in flight (pipelined); past it the node stops
# reading that connection until replies go out. Bounds one client's share of memory
# (this many replies held for in-order delivery) while keeping pipelines full.
PB_REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX = 128
# Client requests a node coordinates at once; past it, 503 Busy.
REQUESTS_IN_FLIGHT_MAX = 10_000
# Messages queued for one peer that is not draining them; past it, new ones are
# dropped (the requests they belonged to time out and answer 503).
PEER_QUEUE_MAX_MESSAGES = 50_000
# Keys per page of a key listing between nodes (bounds one message and the
# memory of a streaming listing to one page per partition in flight).
LIST_KEYS_PAGE_MAX = 1_000
# Partitions a listing fetches in parallel (memory: this many pages).
LIST_KEYS_PARTITIONS_IN_FLIGHT_MAX = 4
# Distinct buckets a bucket listing holds in memory before refusing.
LIST_BUCKETS_MAX = 100_000
# Ring sizes: a power of two between these bounds (Riak: 8 .. 1024 typical;
# the simulator runs up to 2^16 for scale studies).
RING_SIZE_MIN = 1
RING_SIZE_MAX = 1 << 16
# Replicas per key.
N_VAL_MAX = 16
# Request timeout a client may ask for.
REQUEST_TIMEOUT_MAX_MS = 10 * 60 * 1000
# Latencies kept per operation for /stats percentiles (a sliding window: the
# percentiles describe the last this-many requests, in bounded memory).
LATENCY_WINDOW_SAMPLES = 10_000
# Hints a fallback keeps for one down owner. A hint is a small row on disk (the
# object is the fallback's own copy); a million per target bounds the disk a long
# outage can cost. Past it the fallback refuses to stand in (see core/hints.py).
HINTS_PER_TARGET_MAX = 1_000_000
# Segments of one partition's Merkle tree (core/merkle.py). More segments mean fewer
# keys to compare per differing segment, but each costs 16 bytes of every tree and
# of a full segment-level reply. Riak's hashtree uses 1024 * 1024; past 2^20 the
# segment level alone (16 MiB) would crowd an internode frame.
MERKLE_SEGMENTS_MAX = 1 << 20
# Children per inner Merkle node: a node that differs costs one reply of this many
# 16-byte hashes per exchange round. 1024 is Riak's hashtree width (a 16 KiB reply).
MERKLE_FANOUT_MAX = 1024
# Anti-entropy (core/anti_entropy.py): exchanges one node runs at once. Each holds
# a tree walk and a few messages; two keep repair going without starving requests.
AE_EXCHANGES_IN_FLIGHT_MAX = 2
# A catch-up exchange (core/anti_entropy.py) that failed, most often because the
# partner is still building its trees after a restart, is tried again this much
# later (or after anti_entropy_interval_ms if that is shorter), then twice as long
# after each further failure; after this many failures it is left to the round.
# Waits of 1 + 2 + ... + 64 s: tries for about two minutes, time for a partner to
# build trees over 12 million keys at 1,000 keys per 10 ms step.
AE_CATCH_UP_RETRY_MS = 1_000
AE_CATCH_UP_FAILURES_MAX = 8
# Segments fetched per exchange message (each ~keys/segment items of ~50 bytes).
AE_SEGMENTS_PER_MESSAGE = 64
# Objects per repair message: bounded by SIBLINGS and VALUE limits, 100 keeps a
# message of ordinary objects in the tens of kilobytes.
AE_REPAIR_KEYS_PER_MESSAGE = 100
# Keys hashed per build step: one LMDB page scan, a few milliseconds of CPU.
AE_BUILD_PAGE_KEYS = 1_000
# Tombstone reaps (core/tombstones.py) one node runs at once. Each asks every member
# for a vote (one small message per member); 16 at once reaps a backlog of deletes
# at tens per second without a burst of votes crowding client requests.
REAPS_IN_FLIGHT_MAX = 16
# Heartbeat gaps the failure detector keeps per peer (core/detector.py): Akka's
# phi accrual keeps 1,000; 8 bytes each, so 8 KB per peer.
PHI_WINDOW_SAMPLES = 1_000

# Keys an actor epoch remembers minting dots for (core/node.py, Node._actor): a local
# delete of one of them starts a new epoch. Past this many (a set of about 10 MB) the
# epoch forgets them and any local delete starts a new one, as after a restart.
EPOCH_KEYS_TRACKED_MAX = 100_000
