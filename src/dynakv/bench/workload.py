"""Workloads and key choosers, pure and seeded (YCSB's core workloads and generators).

A workload is a mix of operations: A is 50% reads and 50% updates, B 95/5, C reads
only, W writes only. An update is a read-modify-write: read the key, then write it
with the context of that read, as a Dynamo client does. A write (W) stores a new
value with the last context this load generator saw for the key.

Keys are chosen uniformly or by YCSB's scrambled zipfian generator (Gray et al.,
"Quickly generating billion-record synthetic databases", SIGMOD 1994; constant 0.99):
ranks are zipfian, and each rank is hashed (FNV-1a) onto a record so that the hot
keys are spread over the key space instead of being the first records.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from enum import Enum

ZIPFIAN_CONSTANT = 0.99
# zeta(n) is a sum over n terms: past this many records, refuse rather than spend
# seconds on it (the scrambled generator only needs a zipfian over this many ranks).
ZIPFIAN_ITEMS_MAX = 10_000_000


class Op(Enum):
    READ = "read"
    UPDATE = "update"
    WRITE = "write"


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    read_proportion: float
    update_proportion: float
    write_proportion: float
    description: str

    def __post_init__(self) -> None:
        total = self.read_proportion + self.update_proportion + self.write_proportion
        assert abs(total - 1.0) < 1e-9, f"workload {self.name}: proportions sum to {total}"

    def choose(self, rng: random.Random) -> Op:
        draw = rng.random()
        if draw < self.read_proportion:
            return Op.READ
        if draw < self.read_proportion + self.update_proportion:
            return Op.UPDATE
        return Op.WRITE


WORKLOADS: dict[str, Workload] = {
    "A": Workload("A", 0.5, 0.5, 0.0, "update heavy: 50% reads, 50% read-modify-writes"),
    "B": Workload("B", 0.95, 0.05, 0.0, "read mostly: 95% reads, 5% read-modify-writes"),
    "C": Workload("C", 1.0, 0.0, 0.0, "read only"),
    "W": Workload("W", 0.0, 0.0, 1.0, "write only: writes with the key's last context"),
}


def workload(name: str) -> Workload:
    try:
        return WORKLOADS[name.upper()]
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; expected one of "
                         f"{', '.join(sorted(WORKLOADS))}") from None


def key_name(index: int) -> str:
    """The record's key (YCSB names its records user<N>)."""
    return f"user{index:010d}"


class UniformKeys:
    """Every record equally likely."""

    def __init__(self, items: int) -> None:
        if items < 1:
            raise ValueError("the key space needs at least one record")
        self.items = items

    def next(self, rng: random.Random) -> int:
        return rng.randrange(self.items)


def zeta(items: int, theta: float) -> float:
    return sum(1.0 / math.pow(rank, theta) for rank in range(1, items + 1))


class ZipfianRanks:
    """Ranks 0..items-1, rank i drawn with probability proportional to 1/(i+1)^theta
    (YCSB's ZipfianGenerator, after Gray et al.)."""

    def __init__(self, items: int, theta: float = ZIPFIAN_CONSTANT) -> None:
        if not 1 <= items <= ZIPFIAN_ITEMS_MAX:
            raise ValueError(f"a zipfian key space holds 1 to {ZIPFIAN_ITEMS_MAX} records")
        if not 0 < theta < 1:
            raise ValueError("the zipfian constant must be between 0 and 1")
        self.items = items
        self.theta = theta
        self.zetan = zeta(items, theta)
        zeta2 = zeta(2, theta)
        self.alpha = 1.0 / (1.0 - theta)
        self.eta = (1 - (2.0 / items) ** (1 - theta)) / (1 - zeta2 / self.zetan)
        self.half_pow_theta = 1 + 0.5 ** theta

    def next(self, rng: random.Random) -> int:
        u = rng.random()
        uz = u * self.zetan
        if uz < 1.0:
            return 0
        if uz < self.half_pow_theta:
            return 1
        rank = int(self.items * (self.eta * u - self.eta + 1) ** self.alpha)
        return min(rank, self.items - 1)

    def probability(self, rank: int) -> float:
        """The exact probability of `rank` (for tests and reports)."""
        return 1.0 / math.pow(rank + 1, self.theta) / self.zetan


FNV_OFFSET_64 = 0xCBF29CE484222325
FNV_PRIME_64 = 0x100000001B3


def fnv1a_64(value: int) -> int:
    """FNV-1a over the 8 little-endian bytes of value (YCSB's fnvhash64)."""
    digest = FNV_OFFSET_64
    for _ in range(8):
        digest ^= value & 0xFF
        digest = (digest * FNV_PRIME_64) & 0xFFFFFFFFFFFFFFFF
        value >>= 8
    return digest


class ScrambledZipfianKeys:
    """Zipfian popularity, hot records scattered over the key space. Ranks that hash
    onto the same record merge their weights (as in YCSB), so the hottest record is
    at least as hot as rank 0."""

    def __init__(self, items: int, theta: float = ZIPFIAN_CONSTANT) -> None:
        self.items = items
        self.ranks = ZipfianRanks(items, theta)

    def next(self, rng: random.Random) -> int:
        return self.record_of(self.ranks.next(rng))

    def record_of(self, rank: int) -> int:
        return fnv1a_64(rank) % self.items


KeyChooser = UniformKeys | ScrambledZipfianKeys
DISTRIBUTIONS = ("uniform", "zipfian")


def key_chooser(distribution: str, items: int) -> KeyChooser:
    if distribution == "uniform":
        return UniformKeys(items)
    if distribution == "zipfian":
        return ScrambledZipfianKeys(items)
    raise ValueError(f"unknown distribution {distribution!r}; expected uniform or zipfian")


class Values:
    """Values of a fixed size, each different (a counter over a random base), cheap
    to make: the generator must not spend its CPU on payloads."""

    def __init__(self, size: int, rng: random.Random) -> None:
        if size < 1:
            raise ValueError("--value-size must be at least 1 byte")
        self.size = size
        self.base = rng.randbytes(size)
        self.count = 0

    def next(self) -> bytes:
        self.count += 1
        stamp = self.count.to_bytes(8, "little")[: self.size]
        return stamp + self.base[len(stamp):]
