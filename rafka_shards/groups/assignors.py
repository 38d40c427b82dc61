"""Server-side partition assignors of the consumer group protocol (KIP-848): ``uniform`` and ``range``.

Runs in the shard that coordinates a group; pure functions, no I/O. An assignor gets the members (their subscribed
topics and their current assignment) and the partition counts of the subscribed topics, and returns every member's
target assignment. Both are deterministic: the same input gives the same output on any coordinator.

- ``uniform`` (Kafka's default server assignor): every subscribed partition goes to exactly one member subscribed to
  its topic; members end with partition counts as even as their subscriptions allow; a member keeps what it owns as
  long as that stays within its share (sticky), so a rebalance moves as few partitions as it can.
- ``range``: per topic, the subscribed members in member id order get contiguous ranges of partitions, the first
  ``partitions % members`` one more (the classic RangeAssignor's layout, computed on the coordinator).
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass

Assignment = dict[str, frozenset[int]]  # topic -> partitions
UNIFORM = "uniform"
RANGE = "range"
ASSIGNORS = (UNIFORM, RANGE)


@dataclass(frozen=True, slots=True)
class MemberSpec:
    subscribed: frozenset[str]
    current: Mapping[str, frozenset[int]]


def assign(name: str, members: Mapping[str, MemberSpec], partitions: Mapping[str, int]) -> dict[str, Assignment]:
    """The target assignment of every member; ``partitions`` holds the partition count of each existing topic."""
    if name == RANGE:
        return _range(members, partitions)
    if name == UNIFORM:
        return _uniform(members, partitions)
    raise ValueError(f"unknown assignor {name!r}")


def _range(members: Mapping[str, MemberSpec], partitions: Mapping[str, int]) -> dict[str, Assignment]:
    out: dict[str, dict[str, set[int]]] = {m: {} for m in members}
    topics = sorted({t for spec in members.values() for t in spec.subscribed if t in partitions})
    for topic in topics:
        subscribers = sorted(m for m, spec in members.items() if topic in spec.subscribed)
        n, k = partitions[topic], len(subscribers)
        start = 0
        for i, member in enumerate(subscribers):
            size = n // k + (1 if i < n % k else 0)
            if size:
                out[member][topic] = set(range(start, start + size))
            start += size
    return _frozen(out)


def _uniform(members: Mapping[str, MemberSpec], partitions: Mapping[str, int]) -> dict[str, Assignment]:
    all_partitions = sorted(
        (t, p)
        for t in {t for s in members.values() for t in s.subscribed if t in partitions}
        for p in range(partitions[t])
    )
    eligible = {tp: sorted(m for m, s in members.items() if tp[0] in s.subscribed) for tp in all_partitions}
    quota = _quotas(members, all_partitions, eligible)
    owned: dict[str, set[tuple[str, int]]] = {m: set() for m in members}
    taken: set[tuple[str, int]] = set()
    # Sticky: each member keeps what it owns, within its quota, in a fixed order.
    for member in sorted(members):
        spec = members[member]
        keep = sorted(
            (t, p)
            for t, ps in spec.current.items()
            if t in spec.subscribed and t in partitions
            for p in ps
            if p < partitions[t]
        )
        for tp in keep:
            if tp not in taken and len(owned[member]) < quota[member]:
                owned[member].add(tp)
                taken.add(tp)
    # The rest: to the eligible member with the fewest partitions (ties by member id), within quotas first.
    for tp in all_partitions:
        if tp in taken or not eligible[tp]:
            continue
        under = [m for m in eligible[tp] if len(owned[m]) < quota[m]] or eligible[tp]
        member = min(under, key=lambda m: (len(owned[m]), m))
        owned[member].add(tp)
        taken.add(tp)
    out: dict[str, dict[str, set[int]]] = {m: {} for m in members}
    for member, tps in owned.items():
        for t, p in tps:
            out[member].setdefault(t, set()).add(p)
    return _frozen(out)


def _quotas(
    members: Mapping[str, MemberSpec],
    all_partitions: list[tuple[str, int]],
    eligible: Mapping[tuple[str, int], list[str]],
) -> dict[str, int]:
    """How many partitions each member may hold: an even share of what it is eligible for, the remainder to the
    members first in id order (homogeneous subscriptions: exactly even, off by at most one)."""
    quota: dict[str, int] = {}
    ordered = sorted(members)
    for i, member in enumerate(ordered):
        mine = [tp for tp in all_partitions if member in eligible[tp]]
        sharers = {m for tp in mine for m in eligible[tp]} or {member}
        base, extra = divmod(len(mine), len(sharers))
        rank = sorted(sharers).index(member) if member in sharers else i
        quota[member] = base + (1 if rank < extra else 0)
    return quota


def _frozen(out: Mapping[str, Mapping[str, Set[int]]]) -> dict[str, Assignment]:
    return {m: {t: frozenset(ps) for t, ps in a.items() if ps} for m, a in out.items()}
