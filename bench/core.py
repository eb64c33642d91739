"""The core's CPU per operation, without sockets, threads or a disk: three Nodes in one
process, every message encoded and decoded with the internode codec as the transport
does, storage in memory, writes made durable at once (persist, then send, as the
runtime does). Workload A: half reads, half read-modify-writes with the read's
context, over uniform keys loaded first.

    python bench/core.py                     # microseconds per A operation, 5 rounds
    python bench/core.py --profile 30        # cProfile's top 30 functions by own time

What a node does beyond this (the event loop, sockets, the commit thread, LMDB) is in
bench/profile.py's figures; the difference between the two is the runtime's share.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections import deque

from dynakv.config import Config
from dynakv.core import api, codec
from dynakv.core.claim import Member, claim
from dynakv.core.node import ClientEvent, MessageEvent, Node
from dynakv.core.ring import Ring
from dynakv.storage.memory import MemoryStorage

NAMES = ("n1", "n2", "n3")


class Cluster:
    def __init__(self, ring_size: int) -> None:
        config = Config(ring_size=ring_size)
        ring = Ring(claim(ring_size, [Member(name) for name in NAMES], config.n_val))
        self.storage = {name: MemoryStorage() for name in NAMES}
        self.nodes = {name: Node(name=name, server_id=f"{name}@1", ring=ring,
                                 peers=list(NAMES), storage=self.storage[name],
                                 config=config, rng=random.Random(name), now_ms=0)
                      for name in NAMES}
        self.replies: dict[int, api.Response] = {}
        self.client_ids = 0

    def request(self, via: str, request: api.Request) -> api.Response:
        self.client_ids += 1
        self.nodes[via].step(ClientEvent(self.client_ids, request), 0)
        queue: deque[tuple[str, str, bytes]] = deque()
        progress = True
        while progress:
            progress = False
            for name, node in self.nodes.items():
                out = node.take_output()
                if out.writes:
                    self.storage[name].write(out.writes)
                    node.on_durable(out.write_seq)
                    progress = True
                for target, message in [*out.early, *out.messages]:
                    queue.append((name, target, codec.encode(message)))
                for client_id, response in out.replies:
                    self.replies[client_id] = response
                    progress = True
            while queue:
                sender, target, data = queue.popleft()
                self.nodes[target].step(MessageEvent(sender, codec.decode(data)), 0)
                progress = True
        return self.replies.pop(self.client_ids)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--keys", type=int, default=1_000)
    p.add_argument("--operations", type=int, default=5_000, help="per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--ring-size", type=int, default=64)
    p.add_argument("--profile", type=int, metavar="TOP", default=0,
                   help="one round under cProfile instead, its top functions by own time")
    args = p.parse_args()
    cluster = Cluster(args.ring_size)
    rng = random.Random(1)
    value = b"x" * 100

    def content() -> api.Content:
        return api.Content(value, content_type="application/octet-stream")

    for key in range(args.keys):
        cluster.request(NAMES[key % 3], api.PutRequest("default", "b", f"k{key}", content()))

    def operation() -> None:
        key = f"k{rng.randrange(args.keys)}"
        via = rng.choice(NAMES)
        read = cluster.request(via, api.GetRequest("default", "b", key))
        assert isinstance(read, api.ObjectResponse), read
        if rng.random() < 0.5:
            written = cluster.request(via, api.PutRequest("default", "b", key, content(),
                                                          context=read.context))
            assert isinstance(written, api.DoneResponse), written

    for _ in range(args.operations // 10):  # warm-up
        operation()
    if args.profile:
        # This folder is sys.path[0] when the script runs, and its profile.py would
        # shadow the standard library's, which cProfile imports.
        here = sys.path.pop(0)
        import cProfile
        import pstats
        sys.path.insert(0, here)
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(args.operations):
            operation()
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.profile)
        return 0
    rounds = []
    for _ in range(args.rounds):
        started = time.perf_counter()
        for _ in range(args.operations):
            operation()
        rounds.append((time.perf_counter() - started) / args.operations * 1e6)
    print(f"core and codec, all three nodes: median {statistics.median(rounds):.0f} µs per "
          f"A operation ({', '.join(f'{r:.0f}' for r in rounds)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
