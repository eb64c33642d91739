"""The claim: which node owns which partition.

A key's N replicas are the owners of N consecutive partitions (core/ring.py walks
clockwise from the key's partition and takes the first N distinct owners), so the
claim spreads owners along the ring. It follows four rules, in this order of
precedence, because they cannot always all hold:

1. Distinct nodes: with more than N nodes, any N consecutive partitions have
   distinct owners, so a key's N replicas are N distinct nodes found within N
   partitions (the ones core/ring.py's preference list walks); a node can then own
   at most floor(Q / N) partitions. With N nodes or fewer, every node owns at least
   one partition (then every preference list holds them all).
2. Distinct zones: when the members span at least N zones, any N consecutive
   partitions have owners in distinct zones (the empty zone counts as one zone). A
   zone can then own at most floor(Q / N) partitions. With fewer than N zones there
   is no zone rule.
3. Weight: each node owns its weight-proportional share of the Q partitions within
   one partition, where the share is computed under the caps of rules 1 and 2 (water
   filling: a capped node or zone gets its cap and the rest is shared by weight among
   the others; zone totals first, then nodes within each zone).
4. Least movement: given the current ring, a node keeps every partition it may keep;
   the partitions of departed nodes and the excess of nodes above their share are
   the only ones taken, by the nodes below their share, at positions where rules 1 and
   2 hold. A join of one node to n moves about Q/(n+1) partitions.

When the partition counts make rule 1 or 2 impossible (Q = 2^k cannot be cut evenly
into N = 3 laps, so with 3 zones, or with 4 nodes whose caps cannot hold Q, a window
near the wrap must repeat), the claim keeps the fewest violations it finds. When taking partitions
leaves violations that swaps cannot repair but a fresh layout avoids, the fresh layout
wins (rule 2 before rule 4), at the cost of moving most partitions.

Pure functions of their arguments, deterministic and independent of member order:
every node computes the same ring.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    weight: int = 1
    zone: str = ""

    def __post_init__(self) -> None:
        if self.weight < 1:
            raise ValueError(f"node {self.name}: weight must be a positive integer")


def windows(members: Sequence[Member], n_val: int) -> tuple[int, int]:
    """(W_node, W_zone): the windows of consecutive partitions that rules 1 and 2 keep
    distinct (a window of 1 is no rule). With N or fewer nodes every preference list
    holds every node that owns a partition, so rule 1 asks only that each owns one."""
    zones = len({member.zone for member in members})
    nodes = len(members)
    return n_val if nodes > n_val else 1, n_val if zones >= n_val > 1 else 1


def _node_shares(total: float, inside: Sequence[Member], caps: Mapping[str, int],
                 floor_one: bool) -> dict[str, float]:
    """Water-filled shares of a zone's total; with `floor_one`, none below one."""
    fixed: dict[str, float] = {}
    while True:
        rest = [m for m in inside if m.name not in fixed]
        if not rest:
            return fixed
        result = _waterfill(total - len(fixed), {m.name: m.weight for m in rest},
                            {m.name: caps[m.name] for m in rest})
        low = [name for name, share in result.items() if share < 1] if floor_one else []
        if not low:
            return {**fixed, **result}
        fixed.update(dict.fromkeys(low, 1.0))


def _waterfill(total: float, weights: Mapping[str, float], caps: Mapping[str, float]
               ) -> dict[str, float]:
    """Shares of `total` proportional to weight, none above its cap; if the caps cannot
    hold the total, every share is its cap plus an equal part of the excess."""
    result: dict[str, float] = {}
    active = sorted(weights)
    left = total
    while active:
        weight = sum(weights[k] for k in active)
        capped = [k for k in active if caps[k] <= left * weights[k] / weight]
        if not capped:
            for k in active:
                result[k] = left * weights[k] / weight
            return result
        for k in capped:
            result[k] = caps[k]
            left -= caps[k]
        active = [k for k in active if k not in capped]
    # The few partitions the caps cannot hold are shared equally, not by weight, so that
    # which zone gets them (ties go by name) does not change when weights change.
    return {k: result[k] + max(0.0, left) / len(weights) for k in weights}


def _round(total: int, exact: Mapping[str, float], held: Mapping[str, int]) -> dict[str, int]:
    """Integers summing to `total`, each the floor or ceiling of its exact share: the
    ceilings go first to holders of more than the floor, then by largest remainder,
    ties by name (so that a change of members moves no partition it need not move)."""
    counts = {k: int(share) for k, share in exact.items()}
    left = total - sum(counts.values())
    fractional = [k for k in exact if exact[k] > counts[k]]
    ranked = sorted(fractional, key=lambda k: (
        held.get(k, 0) <= counts[k], -(exact[k] - counts[k]), k))
    if left > len(ranked):  # only from float rounding of whole shares
        ranked += sorted(set(exact) - set(ranked))
    for k in ranked[:left]:
        counts[k] += 1
    return counts


def _caps(ring_size: int, members: Sequence[Member], n_val: int
          ) -> tuple[dict[str, int], dict[str, int]]:
    """Per node and per zone: the most partitions rules 1 and 2 allow."""
    node_window, zone_window = windows(members, n_val)
    node_cap = ring_size // node_window
    node_caps = {m.name: node_cap for m in members}
    zone_caps: dict[str, int] = {}
    for m in members:
        zone_caps[m.zone] = zone_caps.get(m.zone, 0) + node_cap
    if zone_window > 1:
        zone_caps = {z: min(cap, ring_size // zone_window) for z, cap in zone_caps.items()}
    return node_caps, zone_caps


def _check_members(members: Sequence[Member]) -> None:
    if not members:
        raise ValueError("a ring needs at least one member")
    if len({m.name for m in members}) != len(members):
        raise ValueError("member names must be distinct")


def _zone_groups(ring_size: int, members: Sequence[Member], n_val: int, held: Mapping[str, int]
                 ) -> tuple[dict[str, float], dict[str, list[Member]], dict[str, int], bool]:
    """(exact zone totals, members per zone, node caps, floor_one). With N nodes or
    fewer (floor_one: each owns at least one partition), all members form one group."""
    node_caps, zone_caps = _caps(ring_size, members, n_val)
    floor_one = len(members) <= min(n_val, ring_size)
    if floor_one:
        caps = {m.name: min(node_caps[m.name], zone_caps[m.zone]) for m in members}
        return {"": float(ring_size)}, {"": list(members)}, caps, True
    groups: dict[str, list[Member]] = {}
    for m in members:
        groups.setdefault(m.zone, []).append(m)
    zone_weights = {z: float(sum(m.weight for m in inside)) for z, inside in groups.items()}
    return _waterfill(ring_size, zone_weights, zone_caps), groups, node_caps, False


def shares(ring_size: int, members: Sequence[Member], n_val: int = 1) -> dict[str, float]:
    """Each node's exact (fractional) fair share of the partitions under rules 1-3."""
    _check_members(members)
    zone_shares, groups, node_caps, floor_one = _zone_groups(ring_size, members, n_val, {})
    result: dict[str, float] = {}
    for zone, zone_share in zone_shares.items():
        result.update(_node_shares(zone_share, groups[zone], node_caps, floor_one))
    return result


def quotas(
    ring_size: int, members: Sequence[Member], current: Mapping[str, int] | None = None,
    n_val: int = 1,
) -> dict[str, int]:
    """Partitions per node: the floor or ceiling of its fair share (`shares`), zone
    totals rounded first; given the current counts, nodes that already hold more than
    their floor get the ceilings first."""
    _check_members(members)
    held = current or {}
    zone_shares, groups, node_caps, floor_one = _zone_groups(ring_size, members, n_val, held)
    zone_held = {z: sum(held.get(m.name, 0) for m in inside) for z, inside in groups.items()}
    zone_totals = _round(ring_size, zone_shares, zone_held)
    counts: dict[str, int] = {}
    for zone, zone_total in zone_totals.items():
        exact = _node_shares(zone_total, groups[zone], node_caps, floor_one)
        counts.update(_round(zone_total, exact, held))
    return counts


class _Layout:
    """A ring being claimed: owners as member indexes (-1: not yet owned)."""

    def __init__(self, ring_size: int, members: Sequence[Member], n_val: int) -> None:
        self.size = ring_size
        self.names = sorted(m.name for m in members)
        by_name = {m.name: m for m in members}
        zone_names = sorted({m.zone for m in members})
        self.zone = [zone_names.index(by_name[name].zone) for name in self.names]
        self.zones = len(zone_names)
        self.node_window, self.zone_window = windows(members, n_val)
        self.owners = [-1] * ring_size
        self.node_offsets = self._offsets(self.node_window)
        self.zone_offsets = self._offsets(self.zone_window)

    def _offsets(self, window: int) -> tuple[int, ...]:
        """Offsets to the positions within window - 1 (not itself, once each, wrapping)."""
        size, seen = self.size, {0}
        found = []
        for d in (*range(1, window), *range(-1, -window, -1)):
            if d % size not in seen:
                seen.add(d % size)
                found.append(d)
        return tuple(found)

    def fits(self, position: int, node: int) -> bool:
        """Would `node` at `position` keep rules 1 and 2 with its neighbours?"""
        owners, size = self.owners, self.size
        for d in self.node_offsets:
            if owners[(position + d) % size] == node:
                return False
        return self.zone_window == 1 or self.zone_allowed(position, self.zone[node], node)

    def zone_allowed(self, position: int, zone: int, node: int = -1) -> bool:
        """May a node of `zone` own `position` (rule 2)? `node` itself is not counted."""
        if self.zone_window == 1:
            return True
        owners, size, zone_of = self.owners, self.size, self.zone
        for d in self.zone_offsets:
            other = owners[(position + d) % size]
            if other >= 0 and other != node and zone_of[other] == zone:
                return False
        return True

    def violations(self) -> list[int]:
        owners, size, zone_of = self.owners, self.size, self.zone
        found: set[int] = set()
        window = max(self.node_window, self.zone_window)
        forward = [d for d in self._offsets(window) if d > 0]
        for position, node in enumerate(owners):
            if node < 0:
                continue
            for d in forward:
                other_position = (position + d) % size
                other = owners[other_position]
                if other < 0:
                    continue
                if (other == node and d < self.node_window) or (
                        d < self.zone_window and zone_of[other] == zone_of[node]):
                    found.update((position, other_position))
        return sorted(found)


def violations(owners: Sequence[str], members: Sequence[Member], n_val: int) -> list[int]:
    """Partitions whose owner breaks rule 1 or 2 with a neighbour (both are listed)."""
    layout = _Layout(len(owners), members, n_val)
    index = {name: i for i, name in enumerate(layout.names)}
    layout.owners = [index[owner] for owner in owners]
    return layout.violations()


class _Queue:
    """Items (nodes of a zone, or zones) with counts to place round a whole ring: the
    next one by earliest deadline (item i's k-th place is due at (k + 1/2) / count_i of
    the way round, which spreads each item evenly), unless one is urgent: with r left
    and window W it needs every W-th of the places left (less the last ones, within W
    of its first place across the wrap). Heaps with lazy deletion of stale entries."""

    def __init__(self, counts: dict[int, int], places: int, window: int) -> None:
        self.left = dict(counts)
        self.placed = dict.fromkeys(counts, 0)
        self.first: dict[int, int] = {}
        self.step = {i: places / count for i, count in counts.items() if count}
        self.window = window
        self.by_deadline = [(self.step[i] * self._phase(i, 0), i, 0) for i in self.step]
        self.by_left = [(-count, places, i) for i, count in counts.items() if count]
        heapq.heapify(self.by_deadline)
        heapq.heapify(self.by_left)

    @staticmethod
    def _phase(item: int, done: int) -> float:
        """Where in its k-th stretch an item's place is due: between 1/4 and 3/4, varied
        by item and lap (golden-ratio steps), so that items of equal counts do not
        follow each other in one fixed order all round the ring (a rigid order leaves
        a leaver's partitions with no neighbour-free taker)."""
        return 0.25 + ((item * 0.6180339887 + done * 0.4142135624) % 1.0) / 2

    def take(self, item: int, index: int) -> None:
        self.left[item] -= 1
        self.placed[item] += 1
        self.first.setdefault(item, index)
        if self.left[item]:
            done = self.placed[item]
            deadline = (done + self._phase(item, done)) * self.step[item]
            heapq.heappush(self.by_deadline, (deadline, item, done))
            heapq.heappush(self.by_left, (-self.left[item], self.first[item], item))

    def choose(self, index: int, places_left: int, accept: Callable[[int], bool]) -> int:
        """The item to place at `index` that `accept` takes (-1: none); not yet taken."""
        while self.by_left and -self.by_left[0][0] != self.left[self.by_left[0][2]]:
            heapq.heappop(self.by_left)
        if self.window > 1 and self.by_left:
            count, item = -self.by_left[0][0], self.by_left[0][2]
            blocked = max(0, self.window - 1 - self.first.get(item, index))
            if (count - 1) * self.window + 1 + blocked >= places_left and accept(item):
                return item
        skipped, found = [], -1
        while self.by_deadline:
            entry = heapq.heappop(self.by_deadline)
            if entry[2] != self.placed[entry[1]]:
                continue  # stale
            skipped.append(entry)
            if accept(entry[1]):
                found = entry[1]
                break
        for entry in skipped:
            heapq.heappush(self.by_deadline, entry)
        return found

    def most_left(self) -> int:
        return max((i for i in self.left if self.left[i]), key=lambda i: (self.left[i], -i))


def _fill(layout: _Layout, positions: Sequence[int], remaining: list[int]) -> None:
    """Give each of `positions` (in order) an owner with partitions still to take: a
    zone, then a node of it, that fit there (`_Queue` order). Where nothing fits, the
    zone and node with most left take it anyway (a violation for `_repair`)."""
    zone_of = layout.zone
    zone_counts: dict[int, int] = {}
    node_counts: list[dict[int, int]] = [{} for _ in range(layout.zones)]
    for node, left in enumerate(remaining):
        if left:
            zone_counts[zone_of[node]] = zone_counts.get(zone_of[node], 0) + left
            node_counts[zone_of[node]][node] = left
    places = len(positions)
    zones = _Queue(zone_counts, places, layout.zone_window)
    nodes = {z: _Queue(counts, places, layout.node_window)
             for z, counts in enumerate(node_counts) if counts}
    assert list(positions) == list(range(layout.size)), "fills a whole ring"
    for position in positions:
        left = places - position

        def node_fits(node: int, position: int = position) -> bool:
            return layout.fits(position, node)

        def zone_fits(zone: int, position: int = position, left: int = left) -> bool:
            return layout.zone_allowed(position, zone) and nodes[zone].choose(
                position, left, node_fits) >= 0

        zone = zones.choose(position, left, zone_fits)
        node = nodes[zone].choose(position, left, node_fits) if zone >= 0 else -1
        if node < 0:
            zone = zones.most_left()
            node = nodes[zone].most_left()
        layout.owners[position] = node
        remaining[node] -= 1
        zones.take(zone, position)
        nodes[zone].take(node, position)


def _match(layout: _Layout, positions: Sequence[int], remaining: list[int],
           excess: list[int]) -> None:
    """Fill the partitions of departed nodes: a maximum matching (augmenting paths) of
    them to nodes below their quota that fit there. A partition no such node fits goes
    to a node that fits, which then gives up one elsewhere (`excess`), else to the most
    deficient node (a violation left to `_repair`)."""
    nodes = sorted((x for x in range(len(remaining)) if remaining[x]),
                   key=lambda x: (-remaining[x], x))
    candidates = {p: [x for x in nodes if layout.fits(p, x)] for p in positions}
    assigned: dict[int, int] = {}
    held: dict[int, list[int]] = {x: [] for x in nodes}
    for start in positions:
        via: dict[int, int] = {}
        from_node: dict[int, int] = {}
        queue, seen_positions, end = [start], {start}, -1
        while queue and end < 0:
            position = queue.pop(0)
            for node in candidates[position]:
                if node in via:
                    continue
                via[node] = position
                if len(held[node]) < remaining[node]:
                    end = node
                    break
                for other in held[node]:
                    if other not in seen_positions:
                        seen_positions.add(other)
                        from_node[other] = node
                        queue.append(other)
        while end >= 0:  # augment: each position on the path moves to the next node
            position = via[end]
            previous = from_node.get(position, -1) if position != start else -1
            if previous >= 0:
                held[previous].remove(position)
            assigned[position] = end
            held[end].append(position)
            end = previous
    for position, node in assigned.items():
        layout.owners[position] = node
        remaining[node] -= 1
        excess[node] += 1
    everyone = sorted(range(len(remaining)), key=lambda x: (-remaining[x], x))
    for position in positions:
        if position in assigned:
            continue
        fitting = [x for x in everyone if layout.fits(position, x)]
        if fitting and not remaining[fitting[0]]:
            node = max(fitting, key=lambda x: (excess[x], -x))
            excess[node] += 1
        else:
            node = fitting[0] if fitting else max(
                range(len(remaining)), key=lambda x: (remaining[x], -x))
            remaining[node] -= 1
            excess[node] += 1
        layout.owners[position] = node


def _take(layout: _Layout, remaining: list[int], excess: list[int]) -> None:
    """Nodes below their quota take partitions from nodes above theirs, each at
    positions spread evenly round the ring where it fits."""
    size, owners = layout.size, layout.owners
    for node in sorted(range(len(remaining)), key=lambda i: (-remaining[i], i)):
        need = remaining[node]
        if not need:
            continue
        stride = size / need
        offset = (node * 2654435761) % size  # spread the takers' starting points
        for k in range(need):
            ideal = int(offset + k * stride) % size
            chosen = -1
            fallback = -1
            for distance in range(size):
                for position in {(ideal + distance) % size, (ideal - distance) % size}:
                    holder = owners[position]
                    if holder < 0 or excess[holder] <= 0:
                        continue
                    if layout.fits(position, node):
                        chosen = position
                        break
                    if fallback < 0:
                        fallback = position
                if chosen >= 0:
                    break
            if chosen < 0:
                chosen = fallback
            assert chosen >= 0
            excess[owners[chosen]] -= 1
            owners[chosen] = node
            remaining[node] -= 1


def _repair(layout: _Layout, changed: Sequence[int]) -> None:
    """Swap owners to clear violations: with partitions that move anyway first (a swap
    of two of them costs no extra movement), then with any partition."""
    owners, size = layout.owners, layout.size
    for _ in range(3):
        progress = False
        for position in layout.violations():
            if layout.fits(position, owners[position]):
                continue  # cleared by an earlier swap
            ring_order = ((position + size // 2 + d) % size for d in range(size))
            for other in (*changed, *ring_order):
                if owners[other] == owners[position]:
                    continue
                owners[position], owners[other] = owners[other], owners[position]
                if layout.fits(position, owners[position]) and layout.fits(
                        other, owners[other]):
                    progress = True
                    break
                owners[position], owners[other] = owners[other], owners[position]
        if not progress:
            return


def _unavoidable(ring_size: int, members: Sequence[Member], n_val: int,
                 quota: Mapping[str, int]) -> int:
    """A rough count of violations no layout avoids: each partition a node or zone owns
    above its cap makes a pair of neighbours repeat."""
    node_caps, zone_caps = _caps(ring_size, members, n_val)
    zone_totals: dict[str, int] = {}
    for m in members:
        zone_totals[m.zone] = zone_totals.get(m.zone, 0) + quota[m.name]
    over_nodes = sum(max(0, quota[name] - cap) for name, cap in node_caps.items())
    over_zones = sum(max(0, total - zone_caps[zone]) for zone, total in zone_totals.items())
    return 2 * max(over_nodes, over_zones)


def _fresh(ring_size: int, members: Sequence[Member], n_val: int,
           quota: Mapping[str, int]) -> _Layout:
    layout = _Layout(ring_size, members, n_val)
    _fill(layout, range(ring_size), [quota[name] for name in layout.names])
    _repair(layout, range(ring_size))
    return layout


def claim(
    ring_size: int,
    members: Sequence[Member],
    n_val: int,
    current: Sequence[str] | None = None,
) -> tuple[str, ...]:
    """A new ownership for `members` under rules 1-4 (module docstring), moving as
    little of `current` as the rules allow."""
    _check_members(members)
    held: dict[str, int] = {}
    for owner in current or ():
        held[owner] = held.get(owner, 0) + 1
    quota = quotas(ring_size, members, held, n_val)
    if current is None:
        layout = _fresh(ring_size, members, n_val, quota)
        return tuple(layout.names[node] for node in layout.owners)
    assert len(current) == ring_size
    layout = _Layout(ring_size, members, n_val)
    index = {name: i for i, name in enumerate(layout.names)}
    layout.owners = [index.get(owner, -1) for owner in current]
    excess = [held.get(name, 0) - quota[name] for name in layout.names]
    remaining = [max(0, -left) for left in excess]
    _match(layout, [p for p, node in enumerate(layout.owners) if node < 0], remaining, excess)
    _take(layout, remaining, excess)
    changed = [p for p, node in enumerate(layout.owners) if layout.names[node] != current[p]]
    _repair(layout, changed)
    left = len(layout.violations())
    if left > _unavoidable(ring_size, members, n_val, quota):  # a fresh layout may do better
        fresh = _fresh(ring_size, members, n_val, quota)
        if len(fresh.violations()) < left:
            layout = fresh
    return tuple(layout.names[node] for node in layout.owners)
