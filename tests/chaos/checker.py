"""The chaos checker: judges a workload's history against what the cluster holds at the end.

Two halves:

- `analyse(history, final, lww)` is pure: it compares the history of client operations
  (tests/chaos/workload.py records it) with the final reads and says what was lost and
  what appeared that nobody wrote. Unit-tested over synthetic histories.
- `final_check(...)` does the I/O after the nemesis healed the cluster: it polls every
  key's primary replicas (`GET /admin/local/...`, what `dynakv admin local-get` shows)
  until they hold the same siblings (converged) or a timeout, then reads every key
  through every node with r=all, lists the unique-key bucket, and calls `analyse`.

The rules (Jepsen's set test, adapted to sloppy quorums and siblings):

1. Every acknowledged write (a 2xx answer) is present at the end: an acknowledged set
   element is in the union of the key's siblings in every final read; an acknowledged
   unique key reads back with its value. Writes answered with a timeout, a reset or a
   503 "may or may not survive" are indeterminate: present or not, both are fine. A
   write that failed definitely (a 4xx, or a 503 saying "nothing was written", or a
   set writer whose read failed so it never sent the put) must NOT be present: that
   is counted as `failed_present` and fails the check like a phantom.
2. Nothing appears that was not attempted: a set element, unique key or value that no
   operation wrote (or that a read returned before any write of it had started) is
   `unexpected`.
3. Replicas converge: after the heal, every key's N primary replicas hold exactly the
   same siblings (same dots, values and tombstone flags); `converge_s` is the time from
   the heal to the poll that saw every checked key converged.

With `lww=True` (a bucket with last_write_wins) concurrent set writes clobber each
other by design, so lost acknowledged elements are counted and reported but do not
fail the result: the runner uses the count as a contrast.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import quote

import aiohttp

from dynakv.client.model import DynakvClientError
from dynakv.client.protocol import Reply, parse_object

DETAILS_MAX = 50  # loss and phantom details kept in a result (the counts are exact)
DETAILS_SHOWN = 10  # of each kind, in CheckResult.report()


class OpType(StrEnum):
    SET_ADD = "set-add"  # read-modify-write of a set key adding `value`
    PUT_UNIQUE = "put-unique"  # one write of a fresh key with the unique `value`
    READ_SET = "read-set"  # a read of a set key
    READ_UNIQUE = "read-unique"  # a read of a unique key


class Outcome(StrEnum):
    OK = "ok"  # acknowledged (2xx for a write; an answer for a read)
    FAIL = "fail"  # definitely not done (a write: nothing was stored)
    INFO = "info"  # indeterminate: a timeout, a reset, a 503 after the fan-out


WRITE_TYPES = frozenset({OpType.SET_ADD, OpType.PUT_UNIQUE})


@dataclass(frozen=True, slots=True)
class Op:
    """One client operation, as the history records it.

    `value` is the element added (SET_ADD) or the value written (PUT_UNIQUE); empty for
    reads. A read records in `seen` what it saw that the workload had not attempted by
    the time the read returned (for a set key: such elements only, so that the history
    stays linear in the number of operations; for a unique key: every value read), and
    in `seen_count` how many elements or values it saw. Times are time.monotonic().
    """

    process: int
    type: OpType
    key: str
    value: str
    start_s: float
    end_s: float
    outcome: Outcome
    node: str = ""
    error: str = ""
    seen: tuple[str, ...] = ()
    seen_count: int = 0

    def describe(self) -> str:
        text = (f"p{self.process} {self.type} {self.key}={self.value!r} {self.outcome} via "
                f"{self.node} [{self.start_s:.3f}, {self.end_s:.3f}]")
        return text + (f" ({self.error})" if self.error else "")


@dataclass(frozen=True, slots=True)
class FinalRead:
    """What one final read of one key through one node saw.

    `values` is the union of the set elements of every sibling (set keys) or the
    siblings' values (unique keys); None when the read did not succeed. `corrupt` lists
    sibling values that were not a valid set encoding.
    """

    node: str
    key: str
    values: frozenset[str] | None
    corrupt: tuple[str, ...] = ()
    error: str = ""


@dataclass
class FinalState:
    set_reads: list[FinalRead] = field(default_factory=list)
    unique_reads: list[FinalRead] = field(default_factory=list)
    listed_unique_keys: frozenset[str] | None = None  # None: the listing failed


@dataclass(frozen=True, slots=True)
class Finding:
    """A lost or unexpected write: the key, the element or value, and the evidence."""

    key: str
    value: str
    reason: str
    op: Op | None = None

    def describe(self) -> str:
        text = f"{self.key} {self.value!r}: {self.reason}"
        return text + (f"; op: {self.op.describe()}" if self.op else "")


@dataclass
class CheckResult:
    attempted: int = 0  # write operations
    acknowledged: int = 0
    failed: int = 0
    indeterminate: int = 0
    reads: int = 0
    lost: int = 0
    unexpected: int = 0
    failed_present: int = 0
    indeterminate_present: int = 0
    unreadable: int = 0  # final reads that never succeeded
    lww: bool = False
    converged: bool = False
    converge_s: float | None = None
    keys_checked_for_convergence: int = 0
    diverging_at_heal: int = 0  # keys whose primaries differed at the first poll
    first_poll_s: float = 0.0  # how long the first poll of every key took
    divergent: list[str] = field(default_factory=list)
    lost_details: list[Finding] = field(default_factory=list)
    unexpected_details: list[Finding] = field(default_factory=list)
    failed_present_details: list[Finding] = field(default_factory=list)
    unreadable_details: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing acknowledged lost (unless last-write-wins), nothing appeared that was
        not written, every final read succeeded, and the replicas converged."""
        return ((self.lost == 0 or self.lww) and self.unexpected == 0
                and self.failed_present == 0 and self.unreadable == 0 and self.converged)

    def summary(self) -> str:
        seconds = "inf" if self.converge_s is None else f"{self.converge_s:.1f}"
        return (f"acknowledged={self.acknowledged} lost={self.lost} "
                f"unexpected={self.unexpected} converge_s={seconds}")

    def report(self) -> str:
        """Several lines: the counts, then the details of every anomaly kept."""
        lines = [
            f"writes attempted={self.attempted} acknowledged={self.acknowledged} "
            f"failed={self.failed} indeterminate={self.indeterminate} "
            f"(present at the end: {self.indeterminate_present}) reads={self.reads}",
            f"lost={self.lost}{' (last_write_wins: expected)' if self.lww else ''} "
            f"unexpected={self.unexpected} failed_present={self.failed_present} "
            f"unreadable={self.unreadable}",
            f"converged={self.converged} over {self.keys_checked_for_convergence} keys "
            f"({self.diverging_at_heal} diverging at the first poll, which took "
            f"{self.first_poll_s:.1f} s), converge_s={self.converge_s}",
        ]
        for title, findings in (("lost", self.lost_details),
                                ("unexpected", self.unexpected_details),
                                ("failed but present", self.failed_present_details)):
            lines.extend(f"  {title}: {finding.describe()}"
                         for finding in findings[:DETAILS_SHOWN])
        lines.extend(f"  unreadable: {text}" for text in self.unreadable_details[:DETAILS_SHOWN])
        lines.extend(f"  divergent: {text}" for text in self.divergent[:DETAILS_SHOWN])
        lines.append(self.summary())
        return "\n".join(lines)


# --- the pure analysis ---------------------------------------------------------------


def analyse(history: Iterable[Op], final: FinalState, lww: bool = False) -> CheckResult:
    """Judge `history` against `final` (rules 1 and 2 of the module docstring).
    Convergence is judged by `diverging_keys`; `final_check` fills it in."""
    result = CheckResult(lww=lww)
    elements: dict[tuple[str, str], Op] = {}  # (set key, element) -> its write
    uniques: dict[str, Op] = {}  # unique key -> its write
    reads: list[Op] = []
    for op in history:
        if op.type in WRITE_TYPES:
            result.attempted += 1
            if op.outcome is Outcome.OK:
                result.acknowledged += 1
            elif op.outcome is Outcome.FAIL:
                result.failed += 1
            else:
                result.indeterminate += 1
            if op.type is OpType.SET_ADD:
                earlier = elements.setdefault((op.key, op.value), op)
            else:
                earlier = uniques.setdefault(op.key, op)
            if earlier is not op:
                raise ValueError(f"the history writes {op.key}={op.value!r} twice: "
                                 f"{earlier.describe()} and {op.describe()}")
        else:
            result.reads += 1
            reads.append(op)
    _check_reads_during_run(result, reads, elements, uniques)
    _check_final_sets(result, final.set_reads, elements)
    _check_final_uniques(result, final, uniques)
    return result


def _lose(result: CheckResult, finding: Finding) -> None:
    result.lost += 1
    if len(result.lost_details) < DETAILS_MAX:
        result.lost_details.append(finding)


def _phantom(result: CheckResult, finding: Finding) -> None:
    result.unexpected += 1
    if len(result.unexpected_details) < DETAILS_MAX:
        result.unexpected_details.append(finding)


def _failed_present(result: CheckResult, finding: Finding) -> None:
    result.failed_present += 1
    if len(result.failed_present_details) < DETAILS_MAX:
        result.failed_present_details.append(finding)


def _unreadable(result: CheckResult, read: FinalRead) -> None:
    result.unreadable += 1
    if len(result.unreadable_details) < DETAILS_MAX:
        result.unreadable_details.append(f"{read.key} via {read.node}: {read.error}")


def _check_reads_during_run(result: CheckResult, reads: list[Op],
                            elements: Mapping[tuple[str, str], Op],
                            uniques: Mapping[str, Op]) -> None:
    """A value a read returned must have been written by an op started before the read
    ended: for sets, `seen` holds only what the workload did not know (normally empty)."""
    for read in reads:
        if read.outcome is not Outcome.OK:
            continue
        for value in read.seen:
            write = (elements.get((read.key, value)) if read.type is OpType.READ_SET
                     else uniques.get(read.key))
            if write is None or write.value != value:
                _phantom(result, Finding(read.key, value, "read but never written", read))
            elif write.start_s > read.end_s:
                _phantom(result, Finding(read.key, value,
                                         "read before its write started", read))


def _check_final_sets(result: CheckResult, set_reads: Sequence[FinalRead],
                      elements: Mapping[tuple[str, str], Op]) -> None:
    by_key: dict[str, list[FinalRead]] = {}
    for read in set_reads:
        if read.values is None:
            _unreadable(result, read)
        else:
            by_key.setdefault(read.key, []).append(read)
        for value in read.corrupt:
            _phantom(result, Finding(read.key, value, f"not a set encoding (via {read.node})"))
    present: set[tuple[str, str]] = set()
    for key, key_reads in by_key.items():
        seen_anywhere: set[str] = set()
        for read in key_reads:
            assert read.values is not None
            seen_anywhere |= read.values
        for value in sorted(seen_anywhere):
            if (key, value) not in elements:
                _phantom(result, Finding(key, value, "in the final set but never written"))
        present.update((key, value) for value in seen_anywhere)
    for (key, value), op in elements.items():
        if key not in by_key:
            continue  # unreadable: counted above
        missing_from = [read.node for read in by_key[key]
                        if read.values is not None and value not in read.values]
        if op.outcome is Outcome.OK and missing_from:
            _lose(result, Finding(key, value,
                                  f"acknowledged, missing in the final read via "
                                  f"{', '.join(missing_from)}", op))
        elif op.outcome is Outcome.INFO and (key, value) in present:
            result.indeterminate_present += 1
        elif op.outcome is Outcome.FAIL and (key, value) in present:
            _failed_present(result, Finding(key, value, "failed definitely, yet present", op))


def _check_final_uniques(result: CheckResult, final: FinalState,
                         uniques: Mapping[str, Op]) -> None:
    by_key: dict[str, list[FinalRead]] = {}
    for read in final.unique_reads:
        if read.values is None:
            _unreadable(result, read)
        else:
            by_key.setdefault(read.key, []).append(read)
    for key, key_reads in by_key.items():
        write = uniques.get(key)
        for read in key_reads:
            assert read.values is not None
            for value in sorted(read.values):
                if write is None or value != write.value:
                    _phantom(result, Finding(key, value,
                                             f"unique key read via {read.node} with a value "
                                             f"never written to it", write))
    if final.listed_unique_keys is not None:
        for key in sorted(final.listed_unique_keys - uniques.keys()):
            _phantom(result, Finding(key, "", "listed in the unique bucket, never written"))
    for key, op in uniques.items():
        if key not in by_key:
            continue
        missing_from = [read.node for read in by_key[key]
                        if read.values is not None and op.value not in read.values]
        present = len(missing_from) < len(by_key[key])
        if op.outcome is Outcome.OK and missing_from:
            _lose(result, Finding(key, op.value, f"acknowledged, not found via "
                                  f"{', '.join(missing_from)}", op))
        elif op.outcome is Outcome.INFO and present:
            result.indeterminate_present += 1
        elif op.outcome is Outcome.FAIL and present:
            _failed_present(result, Finding(key, op.value, "failed definitely, yet present", op))


Fingerprint = tuple[tuple[str, int, str, bool], ...]  # (dot node, dot counter, value, deleted)


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """What one primary replica holds for one key (None: it did not answer)."""

    key: str
    node: str
    fingerprint: Fingerprint | None


def diverging_keys(views: Iterable[ReplicaView], n_val: int) -> dict[str, str]:
    """Keys whose primaries are not identical, each with a reason: fewer than n_val
    replicas answered, or two replicas hold different siblings."""
    by_key: dict[str, list[ReplicaView]] = {}
    for view in views:
        by_key.setdefault(view.key, []).append(view)
    diverging: dict[str, str] = {}
    for key, key_views in by_key.items():
        answered = [view for view in key_views if view.fingerprint is not None]
        if len(answered) < n_val:
            missing = sorted(view.node for view in key_views if view.fingerprint is None)
            diverging[key] = (f"{len(answered)} of {n_val} primaries answered"
                              f" (no answer: {', '.join(missing) or '-'})")
            continue
        distinct = {view.fingerprint for view in answered}
        if len(distinct) > 1:
            diverging[key] = "replicas differ: " + "; ".join(
                f"{view.node}: {len(view.fingerprint or ())} siblings" for view in answered)
    return diverging


def fingerprint(local: Mapping[str, Any]) -> Fingerprint:
    """The siblings of an `/admin/local/...` answer as a comparable value."""
    siblings = []
    for sibling in local.get("siblings", []):
        dot = sibling.get("dot") or ["", 0]
        siblings.append((str(dot[0]), int(dot[1]), str(sibling.get("value_base64", "")),
                         bool(sibling.get("deleted", False))))
    return tuple(sorted(siblings))


# --- the I/O: convergence polling and the final reads ---------------------------------


def encode_set(elements: Iterable[str]) -> bytes:
    """A set key's value: a JSON list of its elements, sorted."""
    return json.dumps(sorted(elements), separators=(",", ":")).encode()


def decode_set(value: bytes) -> frozenset[str]:
    """The elements of one sibling; ValueError if it is not a JSON list of strings."""
    elements = json.loads(value)
    if not isinstance(elements, list) or not all(isinstance(e, str) for e in elements):
        raise ValueError("not a JSON list of strings")
    return frozenset(elements)


def key_path(bucket_type: str, bucket: str, key: str) -> str:
    return (f"/types/{quote(bucket_type, safe='')}/buckets/{quote(bucket, safe='')}"
            f"/keys/{quote(key, safe='')}")


@dataclass(frozen=True, slots=True)
class Layout:
    """Where a workload writes: the set keys and the unique keys' bucket."""

    bucket_type: str
    set_bucket: str
    set_keys: tuple[str, ...]
    unique_bucket: str
    n_val: int = 3


async def node_names(session: aiohttp.ClientSession, urls: Sequence[str],
                     timeout_s: float) -> dict[str, str]:
    """Node name -> HTTP base URL, from each node's /admin/status."""
    names: dict[str, str] = {}
    for url in urls:
        async with session.get(url + "/admin/status",
                               timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
            response.raise_for_status()
            status = await response.json()
        names[str(status["node"])] = url
    return names


class _Nodes:
    """The cluster's HTTP endpoints and a bounded number of requests in flight."""

    def __init__(self, session: aiohttp.ClientSession, urls: Sequence[str],
                 names: Mapping[str, str], request_timeout_s: float, concurrency: int) -> None:
        self.session = session
        self.urls = list(urls)
        self.names = dict(names)
        self.timeout = aiohttp.ClientTimeout(total=request_timeout_s)
        self.slots = asyncio.Semaphore(concurrency)

    async def get(self, url: str, headers: Mapping[str, str] | None = None
                  ) -> tuple[int, Mapping[str, str], bytes]:
        """One GET; raises OSError, aiohttp.ClientError or TimeoutError."""
        async with self.slots, self.session.get(url, headers=headers,
                                                timeout=self.timeout) as response:
            return response.status, response.headers, await response.read()


async def _primaries(nodes: _Nodes, path: str, attempt: int) -> list[str] | str:
    """The key's primary owners' names (asked of one node, the next ones on errors), or
    why they are not known: a fallback in the preflist means a node is seen down."""
    errors = []
    for index in range(len(nodes.urls)):
        url = nodes.urls[(attempt + index) % len(nodes.urls)]
        try:
            status, _headers, body = await nodes.get(url + path + "/preflist")
        except (OSError, aiohttp.ClientError, TimeoutError) as error:
            errors.append(f"{url}: {type(error).__name__}")
            continue
        if status != 200:
            errors.append(f"{url}: {status}")
            continue
        entries = json.loads(body)["preflist"]
        fallbacks = [entry["node"] for entry in entries if not entry["primary"]]
        if fallbacks:
            return f"preflist via {url} has fallbacks {fallbacks}"
        return [str(entry["node"]) for entry in entries]
    return "no node answered the preflist: " + "; ".join(errors)


async def _local_view(nodes: _Nodes, path: str, name: str, key: str) -> ReplicaView:
    url = nodes.names.get(name)
    if url is None:
        return ReplicaView(key, name, None)
    try:
        status, _headers, body = await nodes.get(url + "/admin/local" + path)
    except (OSError, aiohttp.ClientError, TimeoutError):
        return ReplicaView(key, name, None)
    if status != 200:
        return ReplicaView(key, name, None)
    return ReplicaView(key, name, fingerprint(json.loads(body)))


async def diverging_now(nodes: _Nodes, layout: Layout, keys: Sequence[tuple[str, str]],
                        attempt: int = 0) -> tuple[dict[str, str], dict[str, float]]:
    """One poll: the keys ("bucket/key") whose primaries differ now, with the reason; and
    for every key polled, when its last replica answered (time.monotonic())."""

    async def one(bucket: str, key: str) -> tuple[str, list[ReplicaView] | str, float]:
        path = key_path(layout.bucket_type, bucket, key)
        owners = await _primaries(nodes, path, attempt)
        name = f"{bucket}/{key}"
        if isinstance(owners, str):
            return name, owners, time.monotonic()
        views = await asyncio.gather(*(_local_view(nodes, path, owner, name)
                                       for owner in owners))
        return name, list(views), time.monotonic()

    answers = await asyncio.gather(*(one(bucket, key) for bucket, key in keys))
    problems = {name: answer for name, answer, _ in answers if isinstance(answer, str)}
    views = [view for _name, answer, _ in answers if not isinstance(answer, str)
             for view in answer]
    problems.update(diverging_keys(views, layout.n_val))
    return problems, {name: seen_s for name, _answer, seen_s in answers}


@dataclass(frozen=True, slots=True)
class Convergence:
    """What the convergence poll saw. `converge_s`: from the heal to the moment the last
    key seen diverging was seen converged (0.0 if no key was ever seen diverging), None
    if some key still diverged at the deadline. A key first polled late in the first
    poll may have converged unseen, so `first_poll_s` (how long the first poll of every
    key took) bounds what a converge_s of about that size can tell."""

    converge_s: float | None
    diverging: dict[str, str]
    diverging_at_first_poll: int
    first_poll_s: float


async def wait_converged(nodes: _Nodes, layout: Layout, keys: Sequence[tuple[str, str]],
                         heal_s: float, timeout_s: float, poll_interval_s: float = 0.5
                         ) -> Convergence:
    """Poll the keys still diverging until every key's primaries are identical, then
    confirm with a poll of every key (see Convergence)."""
    deadline = heal_s + timeout_s
    pending = list(keys)
    converged_at: dict[str, float] = {}  # keys seen diverging, then converged: when
    ever_diverged: set[str] = set()
    attempt = 0
    first: tuple[int, float] | None = None
    while True:
        poll_started = time.monotonic()
        diverging, seen_s = await diverging_now(nodes, layout, pending, attempt)
        if first is None:
            first = (len(diverging), time.monotonic() - poll_started)
        attempt += 1
        ever_diverged.update(diverging)
        for name, when in seen_s.items():
            if name in ever_diverged and name not in diverging:
                converged_at.setdefault(name, when)
        if not diverging:
            diverging, _ = await diverging_now(nodes, layout, keys, attempt)
            if not diverging:
                converge_s = max(converged_at.values(), default=heal_s) - heal_s
                return Convergence(max(0.0, converge_s), {}, *first)
            ever_diverged.update(diverging)
            for name in diverging:  # diverged again: its time starts over
                converged_at.pop(name, None)
        pending = [(bucket, key) for bucket, key in keys if f"{bucket}/{key}" in diverging]
        if time.monotonic() >= deadline:
            return Convergence(None, diverging, *first)
        await asyncio.sleep(poll_interval_s)


async def _final_read(nodes: _Nodes, url: str, layout: Layout, bucket: str, key: str,
                      is_set: bool, deadline: float) -> FinalRead:
    """Read a key through one node with r=all, retrying until it answers or the deadline."""
    path = key_path(layout.bucket_type, bucket, key) + "?r=all"
    error = ""
    while True:
        try:
            status, headers, body = await nodes.get(url + path,
                                                    {"Accept": "multipart/mixed"})
        except (OSError, aiohttp.ClientError, TimeoutError) as exception:
            error = type(exception).__name__
        else:
            if status in (200, 300, 404):
                try:
                    return _parse_final(url, key, status, headers, body, is_set)
                except DynakvClientError as exception:
                    error = f"unreadable answer: {exception}"
            else:
                error = f"{status} {body[:200]!r}"
        if time.monotonic() >= deadline:
            return FinalRead(url, key, None, error=error)
        await asyncio.sleep(0.2)


def _parse_final(url: str, key: str, status: int, headers: Mapping[str, str], body: bytes,
                 is_set: bool) -> FinalRead:
    siblings = sibling_values(status, headers, body)
    if not is_set:
        return FinalRead(url, key, frozenset(value.decode("utf-8", "replace")
                                             for value in siblings))
    elements: set[str] = set()
    corrupt: list[str] = []
    for value in siblings:
        try:
            elements |= decode_set(value)
        except ValueError:
            corrupt.append(value[:100].decode("utf-8", "replace"))
    return FinalRead(url, key, frozenset(elements), tuple(corrupt))


def sibling_values(status: int, headers: Mapping[str, str], body: bytes) -> list[bytes]:
    """The live siblings' values of a GET's answer (200, 300 multipart/mixed or 404)."""
    reply = Reply(status, tuple(headers.items()), body)
    obj = parse_object("", "", "", reply)
    return [sibling.value for sibling in obj.siblings if not sibling.deleted]


async def final_reads(nodes: _Nodes, layout: Layout, unique_keys: Sequence[str],
                      deadline: float, every_node: bool = True) -> FinalState:
    """Every set key through every node, every unique key through every node (or one
    node each, round robin), and the listing of the unique keys' bucket."""
    urls = nodes.urls
    set_reads = [
        _final_read(nodes, url, layout, layout.set_bucket, key, True, deadline)
        for key in layout.set_keys for url in urls
    ]
    unique_reads = [
        _final_read(nodes, url, layout, layout.unique_bucket, key, False, deadline)
        for index, key in enumerate(unique_keys)
        for url in (urls if every_node else [urls[index % len(urls)]])
    ]
    state = FinalState(list(await asyncio.gather(*set_reads)),
                       list(await asyncio.gather(*unique_reads)))
    listing = (f"/types/{quote(layout.bucket_type, safe='')}/buckets/"
               f"{quote(layout.unique_bucket, safe='')}/keys?keys=true")
    for url in urls:
        try:
            status, _headers, body = await nodes.get(url + listing)
        except (OSError, aiohttp.ClientError, TimeoutError):
            continue
        if status == 200:
            state.listed_unique_keys = frozenset(json.loads(body)["keys"])
            break
    return state


async def final_check(urls: Sequence[str], layout: Layout, history: Sequence[Op], *,
                      lww: bool = False, heal_s: float | None = None,
                      converge_timeout_s: float = 120.0, read_timeout_s: float = 60.0,
                      unique_sample: int | None = 200, seed: int = 0,
                      read_every_node: bool = True, request_timeout_s: float = 5.0,
                      concurrency: int = 32) -> CheckResult:
    """After the heal (`heal_s`, time.monotonic(); default now): wait for the primaries
    of every set key and of `unique_sample` unique keys (None: all) to converge, then
    read everything and judge the history. Never raises for the cluster's state: what
    went wrong is in the result."""
    heal_s = time.monotonic() if heal_s is None else heal_s
    unique_keys = sorted({op.key for op in history if op.type is OpType.PUT_UNIQUE})
    sample = (unique_keys if unique_sample is None or unique_sample >= len(unique_keys)
              else sorted(random.Random(seed).sample(unique_keys, unique_sample)))
    keys = ([(layout.set_bucket, key) for key in layout.set_keys]
            + [(layout.unique_bucket, key) for key in sample])
    async with aiohttp.ClientSession() as session:
        names = await _node_names_retrying(session, urls, request_timeout_s,
                                           heal_s + converge_timeout_s)
        nodes = _Nodes(session, urls, names, request_timeout_s, concurrency)
        convergence = await wait_converged(nodes, layout, keys, heal_s, converge_timeout_s)
        final = await final_reads(nodes, layout, unique_keys,
                                  time.monotonic() + read_timeout_s, read_every_node)
    result = analyse(history, final, lww)
    result.converged = convergence.converge_s is not None
    result.converge_s = convergence.converge_s
    result.keys_checked_for_convergence = len(keys)
    result.diverging_at_heal = convergence.diverging_at_first_poll
    result.first_poll_s = convergence.first_poll_s
    result.divergent = [f"{key}: {reason}"
                        for key, reason in sorted(convergence.diverging.items())]
    return result


async def _node_names_retrying(session: aiohttp.ClientSession, urls: Sequence[str],
                               timeout_s: float, deadline: float) -> dict[str, str]:
    """Node names (nodes may still be starting after the heal): retried to the deadline;
    nodes that never answer are left out (their replicas then count as not answering)."""
    names: dict[str, str] = {}
    while True:
        for url in urls:
            if url in names.values():
                continue
            try:
                names.update(await node_names(session, [url], timeout_s))
            except (OSError, aiohttp.ClientError, TimeoutError, ValueError, KeyError):
                continue
        if len(names) == len(urls) or time.monotonic() >= deadline:
            return names
        await asyncio.sleep(0.5)


def check_cluster(urls: Sequence[str], layout: Layout, history: Sequence[Op],
                  **options: Any) -> CheckResult:
    """`final_check` for a caller without an event loop (options as there)."""
    return asyncio.run(final_check(urls, layout, history, **options))
