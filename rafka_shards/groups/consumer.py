"""The consumer group protocol of KIP-848 (ConsumerGroupHeartbeat): server-side assignment, member epochs and
incremental reconciliation, sans-IO.

Runs in the shard that coordinates the group, inside ``ClassicGroups`` (a group id is either a classic group or a
consumer group; an empty one can change kind). State (KIP-848's model):

- the **group epoch** moves whenever what the assignment depends on changes: a member joins or leaves, a
  subscription or the asked-for assignor changes, a subscribed topic's partition count changes;
- the **target assignment** is computed by the server assignor (``assignors``) for the group epoch (then the
  **assignment epoch** equals it);
- each member reconciles from its current assignment towards its target, Kafka's ``CurrentAssignmentBuilder``:
  partitions it must give up are revoked first (the member keeps its epoch and is ``unrevoked_partitions`` until a
  heartbeat shows it no longer owns them); then it moves to the assignment epoch and receives the partitions of its
  target that no other member still holds (``unreleased_partitions`` until all are free, then ``stable``).

A member that does not heartbeat within the session timeout, or does not revoke within its rebalance timeout, is
removed (fenced). Requests carry the member epoch: an old one gets FENCED_MEMBER_EPOCH (the client rejoins with 0).
"""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from rafka_shards.groups import consumer_records as recs
from rafka_shards.groups.assignors import ASSIGNORS, UNIFORM, Assignment, MemberSpec, assign
from rafka_shards.model import INTERNAL_TOPICS, ErrorCode

LEAVE_EPOCH = -1
STATIC_LEAVE_EPOCH = -2
JOIN_EPOCH = 0


class MemberState(enum.Enum):
    STABLE = "stable"
    UNREVOKED_PARTITIONS = "unrevoked_partitions"
    UNRELEASED_PARTITIONS = "unreleased_partitions"


@dataclass(frozen=True, slots=True)
class ConsumerLimits:
    session_timeout_ms: int = 45_000  # group.consumer.session.timeout.ms
    heartbeat_interval_ms: int = 5_000  # group.consumer.heartbeat.interval.ms
    max_size: int = 10_000


@dataclass(frozen=True, slots=True)
class HeartbeatRequest:
    group_id: str
    member_id: str  # "" on a v0 join: the coordinator names the member; v1 clients name themselves
    member_epoch: int
    instance_id: str | None
    rack_id: str | None
    rebalance_timeout_ms: int  # -1: unchanged
    subscribed: tuple[str, ...] | None  # None: unchanged
    regex: str | None  # v1: a regular expression over topic names (None: unchanged, "": none)
    assignor: str | None
    owned: Mapping[str, frozenset[int]] | None  # what the member holds now; None: unchanged
    client_id: str
    client_host: str
    version: int


@dataclass(frozen=True, slots=True)
class HeartbeatResult:
    error: ErrorCode
    message: str | None = None
    member_id: str | None = None
    member_epoch: int = 0
    heartbeat_interval_ms: int = 0
    assignment: Assignment | None = None  # None: unchanged since the last answer


@dataclass(slots=True)
class ConsumerMember:
    member_id: str
    instance_id: str | None
    rack_id: str | None
    client_id: str
    client_host: str
    subscribed: frozenset[str]
    assignor: str | None
    rebalance_timeout_ms: int
    regex: str = ""  # matched in full against every topic's name (internal topics excluded), as Kafka does
    member_epoch: int = 0
    previous_epoch: int = -1
    state: MemberState = MemberState.STABLE
    assigned: Assignment = field(default_factory=dict)
    revoking: Assignment = field(default_factory=dict)
    sent: Assignment | None = None  # the assignment last answered (None: never)
    deadline_ms: int = 0
    revoke_deadline_ms: int = -1


@dataclass(slots=True)
class ConsumerGroupState:
    group_epoch: int = 0
    assignment_epoch: int = 0
    members: dict[str, ConsumerMember] = field(default_factory=dict)
    static: dict[str, str] = field(default_factory=dict)  # instance id -> member id
    target: dict[str, Assignment] = field(default_factory=dict)
    partition_counts: dict[str, int] = field(default_factory=dict)  # of the subscribed topics, when last assigned
    assignor: str = UNIFORM
    counts_known: bool = True  # False after loading: the next heartbeat takes the image's counts without a bump

    @property
    def state_name(self) -> str:
        """Kafka's ConsumerGroupState: Empty, Assigning, Reconciling, Stable."""
        if not self.members:
            return "Empty"
        if self.assignment_epoch < self.group_epoch:
            return "Assigning"
        if any(
            m.member_epoch != self.assignment_epoch or m.state is not MemberState.STABLE for m in self.members.values()
        ):
            return "Reconciling"
        return "Stable"


def validate(req: HeartbeatRequest) -> str | None:
    """Why the request is malformed (INVALID_REQUEST), or None."""
    if not req.group_id:
        return "the group id is empty"
    if req.member_epoch < STATIC_LEAVE_EPOCH:
        return f"member epoch {req.member_epoch} is not valid"
    if req.version >= 1 and not req.member_id:
        return "a member id is required (ConsumerGroupHeartbeat v1: the client names itself)"
    if req.member_epoch == JOIN_EPOCH:
        if req.rebalance_timeout_ms < 0:
            return "the first heartbeat must carry a rebalance timeout"
        if not req.subscribed and not req.regex:
            return "the first heartbeat must subscribe to at least one topic or a regular expression"
        if req.owned:
            return "the first heartbeat cannot own partitions"
    elif req.member_epoch > 0 and not req.member_id:
        return "a member id is required after joining"
    return None


REGEX_CHARS_MAX = 1000


def compile_regex(pattern: str) -> re.Pattern[str] | str:
    """The compiled pattern, or why it is refused (INVALID_REGULAR_EXPRESSION)."""
    if len(pattern) > REGEX_CHARS_MAX:
        return f"a regular expression of {len(pattern)} characters (at most {REGEX_CHARS_MAX})"
    try:
        return re.compile(pattern)
    except re.error as e:
        return f"{pattern!r} is not a regular expression: {e}"


REGEX_MATCHES_MAX = 1_000  # expressions whose matches are remembered for the current topics


class RegexMatches:
    """The topics each expression matches, remembered for one topics mapping (the metadata image's; the shell passes
    the same object until the image changes): a heartbeat then costs a lookup, not a match against every topic name
    for every member. Forgotten wholesale when the mapping changes or ``REGEX_MATCHES_MAX`` are held."""

    def __init__(self) -> None:
        self._topics: Mapping[str, int] | None = None
        self._found: dict[str, frozenset[str]] = {}

    def matching(self, regex: str, compiled: re.Pattern[str], topics: Mapping[str, int]) -> frozenset[str]:
        if topics is not self._topics:
            self._topics, self._found = topics, {}
        found = self._found.get(regex)
        if found is None:
            if len(self._found) >= REGEX_MATCHES_MAX:
                self._found.clear()
            found = frozenset(t for t in topics if t not in INTERNAL_TOPICS and compiled.fullmatch(t))
            self._found[regex] = found
        return found


def subscribed_topics(
    m: ConsumerMember, topics: Mapping[str, int], matches: RegexMatches | None = None
) -> frozenset[str]:
    """What the member subscribes to: its names plus every non-internal topic its expression matches in full."""
    if not m.regex:
        return m.subscribed
    compiled = compile_regex(m.regex)
    if isinstance(compiled, str):
        return m.subscribed
    if matches is None:
        matches = RegexMatches()
    return m.subscribed | matches.matching(m.regex, compiled, topics)


def _flat(a: Mapping[str, frozenset[int]]) -> set[tuple[str, int]]:
    return {(t, p) for t, ps in a.items() for p in ps}


def _unflat(tps: set[tuple[str, int]]) -> Assignment:
    out: dict[str, set[int]] = {}
    for t, p in tps:
        out.setdefault(t, set()).add(p)
    return {t: frozenset(ps) for t, ps in out.items()}


class ConsumerProtocol:
    """The heartbeat logic over one group's ``ConsumerGroupState``; ``partitions`` is the partition count of every
    existing topic (from the metadata image)."""

    def __init__(self, limits: ConsumerLimits) -> None:
        self.limits = limits
        self.matches = RegexMatches()

    def heartbeat(
        self, g: ConsumerGroupState, req: HeartbeatRequest, partitions: Mapping[str, int], now_ms: int
    ) -> HeartbeatResult:
        if req.member_epoch in (LEAVE_EPOCH, STATIC_LEAVE_EPOCH):
            return self._leave(g, req)
        if req.assignor is not None and req.assignor not in ASSIGNORS:
            return HeartbeatResult(ErrorCode.UNSUPPORTED_ASSIGNOR, f"assignors: {', '.join(ASSIGNORS)}")
        if req.regex:
            compiled = compile_regex(req.regex)
            if isinstance(compiled, str):
                return HeartbeatResult(ErrorCode.INVALID_REGULAR_EXPRESSION, compiled)
        epoch = g.group_epoch
        m = self._member(g, req, now_ms)
        if isinstance(m, HeartbeatResult):
            return m
        joined = g.group_epoch != epoch
        g.group_epoch = epoch  # one bump per heartbeat, whatever changed (KIP-848: the group epoch, not counts)
        changed = self._update(m, req) or joined
        self._maybe_assign(g, partitions, changed)
        m.deadline_ms = now_ms + self.limits.session_timeout_ms
        self._reconcile(g, m, req.owned, now_ms)
        answer: Assignment | None = None
        if m.sent is None or m.sent != m.assigned or (req.owned is not None and dict(req.owned) != m.assigned):
            answer = m.sent = dict(m.assigned)
        return HeartbeatResult(
            ErrorCode.NONE, None, m.member_id, m.member_epoch, self.limits.heartbeat_interval_ms, answer
        )

    def _leave(self, g: ConsumerGroupState, req: HeartbeatRequest) -> HeartbeatResult:
        m = g.members.get(req.member_id)
        if m is None:
            return HeartbeatResult(ErrorCode.UNKNOWN_MEMBER_ID, f"member {req.member_id!r} is not in the group")
        self.remove(g, m.member_id)
        return HeartbeatResult(ErrorCode.NONE, None, m.member_id, req.member_epoch, 0, None)

    def _member(self, g: ConsumerGroupState, req: HeartbeatRequest, now_ms: int) -> ConsumerMember | HeartbeatResult:
        if req.member_epoch == JOIN_EPOCH:
            return self._join(g, req)
        m = g.members.get(req.member_id)
        if m is None:
            return HeartbeatResult(ErrorCode.UNKNOWN_MEMBER_ID, f"member {req.member_id!r} is not in the group")
        if req.member_epoch != m.member_epoch:
            owned_ok = req.owned is None or _flat(req.owned) <= _flat(m.assigned)
            if not (req.member_epoch == m.previous_epoch and owned_ok):
                return HeartbeatResult(
                    ErrorCode.FENCED_MEMBER_EPOCH,
                    f"member epoch {req.member_epoch}, the coordinator has {m.member_epoch}: rejoin",
                )
        return m

    def _join(self, g: ConsumerGroupState, req: HeartbeatRequest) -> ConsumerMember | HeartbeatResult:
        member_id = req.member_id or str(uuid.uuid4())
        if req.instance_id is not None:
            old_id = g.static.get(req.instance_id)
            old = g.members.get(old_id) if old_id is not None else None
            if old is not None and old.member_id != member_id:
                return HeartbeatResult(
                    ErrorCode.UNRELEASED_INSTANCE_ID,
                    f"instance {req.instance_id!r} is still held by member {old.member_id}",
                )
        existing = g.members.get(member_id)
        if existing is not None:  # a member that rejoins with epoch 0 (after FENCED_MEMBER_EPOCH) starts over
            self.remove(g, member_id)
        if len(g.members) >= self.limits.max_size:
            return HeartbeatResult(ErrorCode.GROUP_MAX_SIZE_REACHED, f"the group has {len(g.members)} members")
        m = ConsumerMember(
            member_id,
            req.instance_id,
            req.rack_id,
            req.client_id,
            req.client_host,
            frozenset(req.subscribed or ()),
            req.assignor,
            req.rebalance_timeout_ms,
            req.regex or "",
        )
        g.members[member_id] = m
        if req.instance_id is not None:
            g.static[req.instance_id] = member_id
        g.group_epoch += 1
        return m

    def _update(self, m: ConsumerMember, req: HeartbeatRequest) -> bool:
        """Take what the heartbeat says of the member; True when the assignment depends on what changed."""
        changed = False
        if req.subscribed is not None and frozenset(req.subscribed) != m.subscribed:
            m.subscribed = frozenset(req.subscribed)
            changed = True
        if req.assignor is not None and req.assignor != m.assignor:
            m.assignor = req.assignor
            changed = True
        if req.regex is not None and req.regex != m.regex:
            m.regex = req.regex
            changed = True
        if req.rebalance_timeout_ms >= 0:
            m.rebalance_timeout_ms = req.rebalance_timeout_ms
        m.client_id, m.client_host = req.client_id, req.client_host
        if req.rack_id is not None:
            m.rack_id = req.rack_id
        return changed

    def _maybe_assign(self, g: ConsumerGroupState, partitions: Mapping[str, int], changed: bool) -> None:
        effective = {mid: subscribed_topics(m, partitions, self.matches) for mid, m in g.members.items()}
        subscribed = {t for ts in effective.values() for t in ts}
        counts = {t: partitions[t] for t in sorted(subscribed) if t in partitions}
        if not g.counts_known:
            g.partition_counts, g.counts_known = counts, True
        elif counts != g.partition_counts:
            g.partition_counts = counts
            changed = True
        if changed:
            g.group_epoch += 1
        if g.assignment_epoch >= g.group_epoch:
            return
        asked = [m.assignor for m in g.members.values() if m.assignor]
        g.assignor = max(sorted(set(asked)), key=asked.count) if asked else UNIFORM
        specs = {mid: MemberSpec(effective[mid], m.assigned) for mid, m in g.members.items()}
        g.target = assign(g.assignor, specs, counts)
        g.assignment_epoch = g.group_epoch

    def _held_by_others(self, g: ConsumerGroupState, member_id: str) -> set[tuple[str, int]]:
        held: set[tuple[str, int]] = set()
        for other in g.members.values():
            if other.member_id != member_id:
                held |= _flat(other.assigned) | _flat(other.revoking)
        return held

    def _reconcile(
        self, g: ConsumerGroupState, m: ConsumerMember, owned: Mapping[str, frozenset[int]] | None, now_ms: int
    ) -> None:
        """Kafka's CurrentAssignmentBuilder: revoke first, then take the target's free partitions."""
        if m.state is MemberState.UNREVOKED_PARTITIONS:
            if owned is None or _flat(owned) & _flat(m.revoking):
                return  # still holds partitions it must give up
            m.revoking = {}
            m.revoke_deadline_ms = -1
        target = _flat(g.target.get(m.member_id, {}))
        current = _flat(m.assigned)
        if m.member_epoch == g.assignment_epoch and m.state is MemberState.STABLE:
            return
        to_revoke = current - target
        if to_revoke:
            m.assigned = _unflat(current & target)
            m.revoking = _unflat(to_revoke)
            m.state = MemberState.UNREVOKED_PARTITIONS
            m.revoke_deadline_ms = now_ms + m.rebalance_timeout_ms
            return
        free = (target - current) - self._held_by_others(g, m.member_id)
        m.assigned = _unflat(current | free)
        if m.member_epoch != g.assignment_epoch:
            m.previous_epoch, m.member_epoch = m.member_epoch, g.assignment_epoch
        m.state = MemberState.STABLE if _flat(m.assigned) == target else MemberState.UNRELEASED_PARTITIONS

    def remove(self, g: ConsumerGroupState, member_id: str) -> None:
        m = g.members.pop(member_id, None)
        if m is None:
            return
        if m.instance_id is not None and g.static.get(m.instance_id) == member_id:
            del g.static[m.instance_id]
        g.target.pop(member_id, None)
        g.group_epoch += 1

    def expire(self, g: ConsumerGroupState, now_ms: int) -> list[str]:
        """Members past their session timeout or their revocation deadline: removed; their ids."""
        gone = [
            m.member_id
            for m in g.members.values()
            if now_ms >= m.deadline_ms or (m.revoke_deadline_ms >= 0 and now_ms >= m.revoke_deadline_ms)
        ]
        for member_id in gone:
            self.remove(g, member_id)
        return gone

    def next_deadline_ms(self, g: ConsumerGroupState) -> int | None:
        deadlines = [m.deadline_ms for m in g.members.values()]
        deadlines += [m.revoke_deadline_ms for m in g.members.values() if m.revoke_deadline_ms >= 0]
        return min(deadlines) if deadlines else None


# ---- what to write: the records between two snapshots of a group (Kafka's record types 3, 5-8) ---------------------

_Meta = tuple[str | None, str | None, str, str, tuple[str, ...], int, str | None, str]
_Current = tuple[int, int, str, Assignment, Assignment]
Snapshot = tuple[int, int, dict[str, _Meta], dict[str, _Current], dict[str, Assignment]]


def snapshot(g: ConsumerGroupState) -> Snapshot:
    meta = {
        mid: (
            m.instance_id,
            m.rack_id,
            m.client_id,
            m.client_host,
            tuple(sorted(m.subscribed)),
            m.rebalance_timeout_ms,
            m.assignor,
            m.regex,
        )
        for mid, m in g.members.items()
    }
    current = {
        mid: (m.member_epoch, m.previous_epoch, m.state.value, dict(m.assigned), dict(m.revoking))
        for mid, m in g.members.items()
    }
    return g.group_epoch, g.assignment_epoch, meta, current, dict(g.target)


def records_between(group_id: str, before: Snapshot, after: Snapshot) -> list[recs.ConsumerRecord]:
    """The records that take the log from ``before`` to ``after``, in Kafka's order: members' metadata, the group
    epoch, the target assignment, the members' current assignments; tombstones for members that left."""
    epoch0, target_epoch0, meta0, current0, target0 = before
    epoch1, target_epoch1, meta1, current1, target1 = after
    out: list[recs.ConsumerRecord] = []
    for mid in sorted(set(meta0) - set(meta1)):
        for kind in (recs.CURRENT_ASSIGNMENT_TYPE, recs.TARGET_MEMBER_TYPE, recs.MEMBER_METADATA_TYPE):
            out.append(recs.ConsumerRecord(kind, group_id, mid, None))
    for mid, m in sorted(meta1.items()):
        if meta0.get(mid) != m:
            i, rack, client, host, subscribed, timeout, assignor, regex = m
            value = recs.MemberMetadata(i, rack, client, host, subscribed, timeout, assignor, regex or None)
            out.append(recs.ConsumerRecord(recs.MEMBER_METADATA_TYPE, group_id, mid, value))
    if epoch1 != epoch0:
        out.append(recs.ConsumerRecord(recs.GROUP_EPOCH_TYPE, group_id, None, recs.GroupEpoch(epoch1)))
    if target_epoch1 != target_epoch0:
        for mid, a in sorted(target1.items()):
            if mid in meta1 and target0.get(mid) != a:
                out.append(recs.ConsumerRecord(recs.TARGET_MEMBER_TYPE, group_id, mid, recs.TargetMember(a)))
        out.append(recs.ConsumerRecord(recs.TARGET_EPOCH_TYPE, group_id, None, recs.TargetEpoch(target_epoch1)))
    for mid, c in sorted(current1.items()):
        if current0.get(mid) != c:
            member_epoch, previous, state, assigned, revoking = c
            value2 = recs.CurrentAssignment(member_epoch, previous, state, assigned, revoking)
            out.append(recs.ConsumerRecord(recs.CURRENT_ASSIGNMENT_TYPE, group_id, mid, value2))
    return out


def load_record(g: ConsumerGroupState, rec: recs.ConsumerRecord) -> None:
    """Replay one record while loading the partition (the latest record per key wins; a tombstone deletes)."""
    v, mid = rec.value, rec.member
    if rec.kind == recs.GROUP_EPOCH_TYPE:
        g.group_epoch = v.epoch if isinstance(v, recs.GroupEpoch) else 0
    elif rec.kind == recs.TARGET_EPOCH_TYPE:
        g.assignment_epoch = v.epoch if isinstance(v, recs.TargetEpoch) else 0
    elif mid is None:
        return
    elif rec.kind == recs.MEMBER_METADATA_TYPE:
        if not isinstance(v, recs.MemberMetadata):
            g.members.pop(mid, None)
            return
        m = g.members.get(mid) or ConsumerMember(mid, None, None, "", "", frozenset(), None, -1)
        m.instance_id, m.rack_id, m.client_id, m.client_host = v.instance_id, v.rack_id, v.client_id, v.client_host
        m.subscribed, m.rebalance_timeout_ms, m.assignor = frozenset(v.subscribed), v.rebalance_timeout_ms, v.assignor
        m.regex = v.regex or ""
        g.members[mid] = m
        if m.instance_id is not None:
            g.static[m.instance_id] = mid
    elif rec.kind == recs.TARGET_MEMBER_TYPE:
        if isinstance(v, recs.TargetMember):
            g.target[mid] = dict(v.partitions)
        else:
            g.target.pop(mid, None)
    elif rec.kind == recs.CURRENT_ASSIGNMENT_TYPE and isinstance(v, recs.CurrentAssignment) and mid in g.members:
        m = g.members[mid]
        m.member_epoch, m.previous_epoch, m.state = v.member_epoch, v.previous_epoch, MemberState(v.state)
        m.assigned, m.revoking = dict(v.assigned), dict(v.revoking)
        m.sent = None
