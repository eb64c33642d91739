"""What a group commit costs with LMDB's two syncs (data pages, then the meta page)
against one (a write-ahead log appended and synced, LMDB itself not synced): wall
time and CPU per commit of five 150-byte writes, alone in one process.

    python bench/syncs.py --commits 600 --rounds 3

A measurement for a design not taken (docs/performance.md): the log variant does not
recover anything, it only shows what one sync instead of two would save.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import tempfile
import time
from collections.abc import Callable

import lmdb

MAP_SIZE_BYTES = 1 << 30
WARMUP_COMMITS = 100


def cpu_us() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime * 1e6, usage.ru_stime * 1e6


def batch(rng: random.Random) -> list[tuple[bytes, bytes]]:
    return [(b"%08d" % rng.randrange(10_000), rng.randbytes(150)) for _ in range(5)]


def lmdb_commit(env: lmdb.Environment, writes: list[tuple[bytes, bytes]]) -> None:
    with env.begin(write=True) as txn:
        for key, value in writes:
            txn.put(key, value)


def measure(folder: str, wal: bool, commits: int) -> tuple[float, float, float]:
    """(wall, user, system) µs per commit."""
    env = lmdb.open(folder, map_size=MAP_SIZE_BYTES, sync=not wal, metasync=not wal)
    log_fd = os.open(os.path.join(folder, "wal"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    rng = random.Random(1)

    def commit() -> None:
        writes = batch(rng)
        if wal:
            os.write(log_fd, b"".join(key + value for key, value in writes))
            os.fdatasync(log_fd)
        lmdb_commit(env, writes)

    for _ in range(WARMUP_COMMITS):
        commit()
    user, system = cpu_us()
    started = time.perf_counter()
    for _ in range(commits):
        commit()
    wall = (time.perf_counter() - started) * 1e6
    user_after, system_after = cpu_us()
    os.close(log_fd)
    env.close()
    return wall / commits, (user_after - user) / commits, (system_after - system) / commits


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--commits", type=int, default=600)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    variants: list[tuple[str, Callable[[str], tuple[float, float, float]]]] = [
        ("LMDB, two syncs", lambda folder: measure(folder, False, args.commits)),
        ("log synced, LMDB not", lambda folder: measure(folder, True, args.commits)),
    ]
    for _ in range(args.rounds):
        for name, run in variants:
            with tempfile.TemporaryDirectory(prefix="dynakv-syncs-") as folder:
                wall, user, system = run(folder)
            print(f"{name:22s} {wall:6.0f} µs per commit, CPU {user:4.0f} + {system:4.0f} µs")


if __name__ == "__main__":
    main()
