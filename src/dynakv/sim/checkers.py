"""The checkers: what must hold of every run, each failing with a clear message.

`Observations` watches the run (every durable write of every node, samples of
every node's queues); the check functions then judge the history of client
operations against what the replicas hold at the end, once faults stopped and the
cluster settled. "The union" of a key is dvvset.sync_all of every live node's
stored object for it: what a read of every replica (fallbacks included) returns.

1. acknowledged writes: every acknowledged put's value is a sibling of the union,
   or was superseded: some client that was shown the value (by a read, or a put's
   returnbody) wrote the key back with a context that had seen its dot (a put that
   became durable, or a delete). That a context covers the dot is not enough: a
   broken merge hands out contexts that cover values it dropped. A dot names one
   write of a key: a dot found with two values is a loss (unless every node had
   forgotten the key in between, as after a reaped tombstone).
2. no phantoms: every value stored or read is one a client wrote; tombstones are
   empty; every dot is of a server id the cluster had.
3. convergence (on by default): at the end, every primary replica of each key holds
   exactly the version set of the union (so the primaries are identical, and no
   fallback holds a version that no primary has: hints were handed off); a key that
   is only tombstones may also be gone from some (reaped). The run's settle time is
   the bound (runner.convergence_bound_ms). Membership: the primaries are those of
   the newest ring (the final owners, after joins and leaves), and a node that left
   the cluster holds no key at all (its partitions were handed off, then dropped).
4. siblings: no sibling of the union is one that a durable later write's context
   had seen (a superseded value coming back); no stored object and no union has
   more live siblings than limits.SIBLINGS_PER_KEY_MAX.
5. queues: requests in flight per node within limits.REQUESTS_IN_FLIGHT_MAX; hints
   per target within limits.HINTS_PER_TARGET_MAX; messages in flight per link within
   network.LINK_IN_FLIGHT_MAX; every message within limits.FRAME_SIZE_MAX_BYTES;
   every request a node got while it stayed up was answered (an error at worst)
   within its timeout; no node's timer deadline was left unserved.
6. deletes: a deleted key stays deleted. Once a delete was acknowledged whose
   context had seen every version ever stored for the key (every dot of every
   value that became durable anywhere), the union of the key may hold no live
   sibling at the end: no replica that missed the delete, nor anti-entropy, read
   repair or handoff bringing an old value back after its tombstone was reaped. A
   write after the delete has a dot the delete had not seen, so the rule does not
   apply to keys written again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dynakv.core import api, dvvset, limits
from dynakv.core import messages as m
from dynakv.core.storage import Write
from dynakv.sim.network import LINK_IN_FLIGHT_MAX, NetworkStats
from dynakv.sim.workload import Key, Op

Dot = tuple[str, int]
# The checkers merge replicas with the sync they were imported with, so that a test
# that breaks dvvset.sync in the core (to show the checkers catch it) does not break
# the checkers' own view of the replicas.
_SYNC = dvvset.sync
MESSAGES_SHOWN_MAX = 5

CHECKERS = ("acknowledged-writes", "no-phantoms", "convergence", "siblings", "queues",
            "deletes")


@dataclass(slots=True)
class CheckResult:
    name: str
    enabled: bool = True
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.enabled and self.violations)

    def summary(self) -> str:
        if not self.enabled:
            return f"check {self.name}: off"
        if not self.violations:
            return f"check {self.name}: ok"
        shown = self.violations[:MESSAGES_SHOWN_MAX]
        more = len(self.violations) - len(shown)
        lines = [f"check {self.name}: FAILED ({len(self.violations)} violation(s))"]
        lines += [f"  - {text}" for text in shown]
        if more:
            lines.append(f"  ... and {more} more")
        return "\n".join(lines)


def _identity(content: api.Content) -> tuple[bytes, str, bool]:
    return (content.value, content.vtag, content.deleted)


class Observations:
    """What the checkers learn while the run goes (a cluster.ClusterObserver)."""

    def __init__(self) -> None:
        self.issued: set[bytes] = set()
        self.dots: dict[bytes, set[Dot]] = {}  # put value -> dots it was stored under
        # put value -> nodes where it was durable (forgotten when the node is wiped or
        # drops its copy of the key, as a fallback does after handing it off)
        self.durable_on: dict[bytes, set[str]] = {}
        self._held: dict[tuple[str, bytes], set[bytes]] = {}  # (node, key) -> values
        self._holders: dict[bytes, set[str]] = {}  # key -> nodes that store it
        self._dot_owner: dict[tuple[bytes, Dot], tuple[bytes, str, bool]] = {}
        self.phantoms: list[str] = []
        self.dot_reuse: list[str] = []
        self.too_many_siblings: list[str] = []
        self.requests_in_flight_max = 0
        self.pending_writes_max = 0
        self.queued_outputs_max = 0
        self.hints_per_target_max = 0

    def issue(self, value: bytes) -> None:
        self.issued.add(value)

    def on_synced(self, node: str, server_id: str, writes: Sequence[Write]) -> None:
        for write in writes:
            if write.partition < 0:
                continue  # node metadata and hints live in negative partitions
            if write.value is None:
                self._dropped(node, write.key)
                continue
            self._holders.setdefault(write.key, set()).add(node)
            self._observe(node, write.key, m.decode_object(write.value))

    def _dropped(self, node: str, key: bytes) -> None:
        """`node` no longer stores `key` (a fallback's copy, a reaped tombstone, a wipe)."""
        for value in self._held.pop((node, key), set()):
            self.durable_on[value].discard(node)
        holders = self._holders.get(key)
        if holders is not None:
            holders.discard(node)
            if not holders:  # no node has the key: its dots may start again from 1
                del self._holders[key]
                for dot_key in [k for k in self._dot_owner if k[0] == key]:
                    del self._dot_owner[dot_key]

    def _observe(self, node: str, key: bytes, obj: api.Object) -> None:
        values = dvvset.values(obj)
        live = 0
        for dot, content in zip(dvvset.dots(obj), values, strict=True):
            if content.deleted:
                if content.value:
                    self.phantoms.append(f"{node} stored a tombstone with a value at {dot}")
            else:
                live += 1
                if content.value not in self.issued:
                    self.phantoms.append(
                        f"{node} stored value {content.value!r} that no client wrote")
                self.dots.setdefault(content.value, set()).add(dot)
                self.durable_on.setdefault(content.value, set()).add(node)
                self._held.setdefault((node, key), set()).add(content.value)
            owner = self._dot_owner.setdefault((key, dot), _identity(content))
            if owner != _identity(content):
                self.dot_reuse.append(
                    f"dot {dot} of key {key!r} names two writes: {owner[0]!r} (vtag "
                    f"{owner[1]}) and {content.value!r} (vtag {content.vtag}), stored on {node}")
        if live > limits.SIBLINGS_PER_KEY_MAX:
            self.too_many_siblings.append(
                f"{node} stored an object with {live} live siblings (limit "
                f"{limits.SIBLINGS_PER_KEY_MAX})")

    def on_wiped(self, node: str) -> None:
        for key in sorted(key for key, holders in self._holders.items() if node in holders):
            self._dropped(node, key)

    def on_sample(self, node: str, status: dict[str, Any], queued_outputs: int) -> None:
        self.requests_in_flight_max = max(self.requests_in_flight_max,
                                          int(status["requests_in_flight"]))
        self.pending_writes_max = max(self.pending_writes_max, int(status["pending_writes"]))
        self.queued_outputs_max = max(self.queued_outputs_max, queued_outputs)
        hints = status.get("hints", {}).get("queued", {})
        self.hints_per_target_max = max(self.hints_per_target_max, *hints.values(), 0)


@dataclass(slots=True)
class FinalState:
    """What the replicas hold at the end, per key touched: node -> stored object."""

    stored: dict[Key, dict[str, api.Object]]
    primaries: dict[Key, list[str]]  # in the newest ring
    server_ids: set[str]
    removed: frozenset[str] = frozenset()  # nodes that left the cluster

    def union(self, key: Key) -> api.Object:
        """dvvset.sync_all of every node's object (the reference sync, see _SYNC)."""
        found = self.stored.get(key, {})
        union: api.Object = dvvset.Clock()
        for node in sorted(found):
            union = _SYNC(union, found[node])
        return union


def _writes_by_key(history: Iterable[Op]) -> dict[Key, list[tuple[Op, dvvset.VersionVector]]]:
    by_key: dict[Key, list[tuple[Op, dvvset.VersionVector]]] = {}
    for op in history:
        if op.kind in ("put", "delete"):
            context = api.decode_context(op.context)
            by_key.setdefault((op.bucket, op.key), []).append((op, context))
    return by_key


def _seen(vector: dvvset.VersionVector, dot: Dot) -> bool:
    return dvvset.descends(vector, (dot,))


def check_acknowledged_writes(
    history: Sequence[Op], observations: Observations, final: FinalState
) -> CheckResult:
    """Checker 1: no acknowledged write is lost."""
    result = CheckResult(CHECKERS[0])
    result.violations += observations.dot_reuse
    for key, writes in sorted(_writes_by_key(history).items()):
        union = final.union(key)
        present = {c.value for c in dvvset.values(union) if not c.deleted}
        union_seen = dvvset.join(union)
        for op, _context in writes:
            if op.kind != "put" or not op.acked or op.value in present:
                continue
            dots = sorted(observations.dots.get(op.value, set()))
            if not dots:
                result.violations.append(
                    f"{op.describe()} was acknowledged but never became durable on any node")
                continue
            superseder = next(
                (
                    other for other, context in writes
                    if other is not op and op.value in other.seen
                    and (other.kind == "delete" or other.value in observations.dots)
                    and any(_seen(context, dot) for dot in dots)
                ),
                None,
            )
            if superseder is not None:
                continue
            if any(_seen(union_seen, dot) for dot in dots):
                result.violations.append(
                    f"{op.describe()} was acknowledged (dots {dots}) and is gone, but no "
                    "client that was shown it wrote the key back: the cluster discarded it")
            else:
                result.violations.append(
                    f"{op.describe()} was acknowledged (dots {dots}) and is lost: no replica "
                    "holds it, none has seen it")
    return result


def check_no_phantoms(
    history: Sequence[Op], observations: Observations, final: FinalState
) -> CheckResult:
    """Checker 2: nothing appears that no client wrote."""
    result = CheckResult(CHECKERS[1])
    result.violations += observations.phantoms
    for op in history:
        response = op.response
        if isinstance(response, api.ObjectResponse):
            for content in response.siblings:
                if content.deleted or content.value not in observations.issued:
                    result.violations.append(
                        f"{op.describe()} was answered a sibling no client wrote: {content!r}")
    for key in sorted(final.stored):
        for node, obj in sorted(final.stored[key].items()):
            for server_id, _counter in dvvset.join(obj):
                if _server_of(server_id) not in final.server_ids:
                    result.violations.append(
                        f"{node} holds {key[0]}/{key[1]} with a dot of unknown server "
                        f"{server_id!r}")
            for content in dvvset.values(obj):
                if not content.deleted and content.value not in observations.issued:
                    result.violations.append(
                        f"{node} holds {key[0]}/{key[1]} value {content.value!r} that no "
                        "client wrote")
    return result


def _versions(obj: api.Object | None) -> list[tuple[Dot, tuple[bytes, str, bool]]]:
    if obj is None:
        return []
    return sorted(zip(dvvset.dots(obj), map(_identity, dvvset.values(obj)), strict=True))


def check_convergence(final: FinalState, enabled: bool = True) -> CheckResult:
    """Checker 3: every primary replica of a key holds exactly the union's version set.

    A key whose union holds only tombstones may also be gone from a primary: reaping
    removes the tombstones from the primaries one after another (a ReapDelete each),
    so for a moment some hold them and some hold nothing; both read as not found.

    A node that left the cluster (removed) may hold no key: it owns nothing, so it
    handed every partition off and dropped it."""
    result = CheckResult(CHECKERS[2], enabled=enabled)
    for key in sorted(final.stored):
        held = final.stored[key]
        for node in sorted(final.removed & set(held)):
            result.violations.append(
                f"{node} left the cluster but still holds {key[0]}/{key[1]} "
                f"{[dot for dot, _ in _versions(held[node])]}")
        union_obj = final.union(key)
        union = _versions(union_obj)
        reapable = all(content.deleted for content in dvvset.values(union_obj))
        versions = {node: _versions(held.get(node)) for node in final.primaries[key]}
        if all(v == union or (reapable and not v) for v in versions.values()):
            continue
        shown = "; ".join(
            f"{node}: {[dot for dot, _ in versions[node]]}" for node in sorted(versions))
        fallbacks = sorted(node for node in held if node not in final.primaries[key])
        extra = f" (fallback copies on {fallbacks})" if fallbacks else ""
        result.violations.append(
            f"{key[0]}/{key[1]} replicas differ from the union "
            f"{[dot for dot, _ in union]}: {shown}{extra}")
    return result


def check_siblings(
    history: Sequence[Op], observations: Observations, final: FinalState
) -> CheckResult:
    """Checker 4: siblings are only writes no later durable context had seen, and few."""
    result = CheckResult(CHECKERS[3])
    result.violations += observations.too_many_siblings
    writes = _writes_by_key(history)
    for key in sorted(final.stored):
        union = final.union(key)
        live = sum(1 for c in dvvset.values(union) if not c.deleted)
        if live > limits.SIBLINGS_PER_KEY_MAX:
            result.violations.append(
                f"{key[0]}/{key[1]} has {live} live siblings across its replicas (limit "
                f"{limits.SIBLINGS_PER_KEY_MAX})")
        durable_puts = [
            (op, context) for op, context in writes.get(key, [])
            if op.kind == "put" and observations.durable_on.get(op.value)
        ]
        for dot, content in zip(dvvset.dots(union), dvvset.values(union), strict=True):
            for op, context in durable_puts:
                if op.value != content.value and _seen(context, dot):
                    nodes = sorted(observations.durable_on[op.value])
                    result.violations.append(
                        f"{key[0]}/{key[1]} still has sibling {content.value!r} (dot {dot}), "
                        f"though {op.describe()} had seen it and is durable on {nodes}")
                    break
    return result


def check_queues(
    history: Sequence[Op], observations: Observations, network: NetworkStats,
    leftovers: Mapping[str, str],
) -> CheckResult:
    """Checker 5: no message or queue grows past its limit; no request is forgotten."""
    result = CheckResult(CHECKERS[4])
    for op in history:
        if op.unanswered:
            result.violations.append(
                f"{op.describe()} was never answered, though {op.node} stayed up")
    if observations.requests_in_flight_max > limits.REQUESTS_IN_FLIGHT_MAX:
        result.violations.append(
            f"a node had {observations.requests_in_flight_max} requests in flight (limit "
            f"{limits.REQUESTS_IN_FLIGHT_MAX})")
    if observations.hints_per_target_max > limits.HINTS_PER_TARGET_MAX:
        result.violations.append(
            f"a node held {observations.hints_per_target_max} hints for one target (limit "
            f"{limits.HINTS_PER_TARGET_MAX})")
    if network.link_in_flight_max > LINK_IN_FLIGHT_MAX:
        result.violations.append(
            f"a link had {network.link_in_flight_max} messages in flight (limit "
            f"{LINK_IN_FLIGHT_MAX})")
    if network.message_bytes_max > limits.FRAME_SIZE_MAX_BYTES:
        result.violations.append(
            f"a message of {network.message_bytes_max} bytes (limit "
            f"{limits.FRAME_SIZE_MAX_BYTES})")
    for node, what in sorted(leftovers.items()):
        result.violations.append(f"{node} has {what}")
    return result


def _covering_delete(writes: Sequence[tuple[Op, dvvset.VersionVector]],
                     observations: Observations) -> Op | None:
    """An acknowledged delete of the key whose context had seen every version ever
    stored for it (every dot of every put value that became durable anywhere)."""
    stored_dots = [dot for op, _context in writes if op.kind == "put"
                   for dot in observations.dots.get(op.value, ())]
    return next((op for op, context in writes
                 if op.kind == "delete" and op.acked
                 and all(_seen(context, dot) for dot in stored_dots)), None)


def deleted_keys(history: Sequence[Op], observations: Observations) -> list[Key]:
    """The keys checker 6 judges: deleted by a context that had seen every version."""
    return [key for key, writes in sorted(_writes_by_key(history).items())
            if _covering_delete(writes, observations) is not None]


def check_deletes(
    history: Sequence[Op], observations: Observations, final: FinalState
) -> CheckResult:
    """Checker 6: a key deleted with a context that had seen every stored version of it
    has no live sibling in the union at the end (a reaped tombstone does not resurrect).

    The union, not each copy: a fallback may still hold an old copy, with a hint, that
    the tombstone on the primaries supersedes; it is harmless until the tombstone is
    reaped, and reaping waits for it (and would show here if it did not)."""
    result = CheckResult(CHECKERS[5])
    for key, writes in sorted(_writes_by_key(history).items()):
        covering = _covering_delete(writes, observations)
        if covering is None:
            continue
        live = [content.value for content in dvvset.values(final.union(key))
                if not content.deleted]
        if live:
            holders = sorted(node for node, obj in final.stored.get(key, {}).items()
                             if any(c.value in live for c in dvvset.values(obj)))
            result.violations.append(
                f"{key[0]}/{key[1]} was deleted by {covering.describe()}, whose context had "
                f"seen every version ever stored (nothing was written after it), yet it is "
                f"live again: {sorted(live)[:3]} on {holders}")
    return result


def _server_of(actor: str) -> str:
    """The server id behind an actor id: "name@incarnation" or "name@incarnation.epoch"
    (a node starts a new epoch after deleting a local copy; see Node._actor)."""
    base, dot, epoch = actor.rpartition(".")
    return base if dot and epoch.isdigit() else actor
