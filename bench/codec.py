"""Microseconds to encode and decode one stored object (a 100-byte value, two
entries), as the node does on every read and write of a replica.

    python bench/codec.py [--rounds 50000]

Run it on two checkouts to compare object formats (docs/architecture.md quotes it:
format 1 at 8b25aba, format 2 at a447918). Medians of 5 timings.
"""

from __future__ import annotations

import argparse
import statistics
import timeit

from dynakv.core import api, dvvset
from dynakv.core import messages as m


def sample() -> api.Object:
    content = api.Content(b"x" * 100, last_modified_ms=1_733_450_000_000,
                          vtag="abcdefgh12345678")
    return dvvset.Clock((dvvset.Entry("n1@1234567:3", 17, (content,)),
                         dvvset.Entry("n2@99999:1", 5, ())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=50_000)
    args = parser.parse_args()
    obj = sample()
    data = m.encode_object(obj)
    assert m.decode_object(data) == obj
    print(f"stored object: {len(data)} bytes")
    for name, call in (("encode_object", lambda: m.encode_object(obj)),
                       ("decode_object", lambda: m.decode_object(data))):
        timings = timeit.repeat(call, number=args.rounds, repeat=5)
        print(f"{name}: {statistics.median(timings) / args.rounds * 1e6:.2f} us")


if __name__ == "__main__":
    main()
