"""The classic consumer group protocol as a state machine: Kafka's GroupCoordinator and GroupMetadata, sans-IO.

Runs in the shard process that leads a partition of ``__consumer_offsets``: one ``ClassicGroups`` per such
partition holds the groups that hash to it (``offsets_records.partition_for``). It owns no socket, file or clock:
requests and ``now_ms`` go in; results come back, and what must be written to the partition and what must be
answered later (a JoinGroup waits for the rebalance, a SyncGroup for the leader's assignment and its write) come out
as effects, drained by the shell (``rafka_shards.shard.group_coordinator``) after every call.

Semantics follow Kafka's classic coordinator: states Empty -> PreparingRebalance -> CompletingRebalance -> Stable
(and Dead); the first join of a group waits ``group.initial.rebalance.delay.ms`` (extended while members keep
arriving, up to the rebalance timeout); a join completes when every member rejoined or the rebalance timeout passed
(members that did not are removed, static ones kept); members that do not heartbeat within their session timeout
are removed; members that do not sync within the rebalance timeout are removed (KIP-814's pending-sync rule); a join
without a member id gets MEMBER_ID_REQUIRED and a fresh id (KIP-394); ``group.instance.id`` makes a member static:
its rejoin replaces the old member id, which is fenced (KIP-345).

Timers are a heap of deadlines; an entry is checked against its object when it fires, so re-arming is a push.
"""

from __future__ import annotations

import enum
import heapq
import random
import struct
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from rafka_shards.groups import consumer_records
from rafka_shards.groups.consumer import (
    ConsumerGroupState,
    ConsumerLimits,
    ConsumerProtocol,
    HeartbeatRequest,
    HeartbeatResult,
    Snapshot,
    load_record,
    records_between,
    snapshot,
    validate,
)
from rafka_shards.groups.offsets_records import (
    GroupKey,
    GroupValue,
    MemberValue,
    OffsetKey,
    OffsetValue,
    encode_group_value,
    encode_key,
)
from rafka_shards.model import ErrorCode

NEW_MEMBER_JOIN_TIMEOUT_MS = 300_000  # Kafka's GroupCoordinator.NewMemberJoinTimeoutMs
CONSUMER_PROTOCOL_TYPE = "consumer"
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")


class GroupState(enum.Enum):
    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


@dataclass(frozen=True, slots=True)
class GroupLimits:
    min_session_timeout_ms: int = 6_000
    max_session_timeout_ms: int = 1_800_000
    max_size: int = 10_000  # members plus members that were given an id and have not joined with it yet
    initial_rebalance_delay_ms: int = 3_000
    member_metadata_max_bytes: int = 1 << 20  # the protocols' metadata of one member, summed
    new_member_join_timeout_ms: int = NEW_MEMBER_JOIN_TIMEOUT_MS


# ---- requests and results ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JoinRequest:
    group_id: str
    member_id: str  # "" on a first join
    instance_id: str | None
    protocol_type: str
    protocols: tuple[tuple[str, bytes], ...]  # (name, metadata), in the member's order of preference
    session_timeout_ms: int
    rebalance_timeout_ms: int
    client_id: str
    client_host: str
    require_known_member_id: bool  # JoinGroup v4+ (KIP-394)


@dataclass(frozen=True, slots=True)
class JoinedMember:
    member_id: str
    instance_id: str | None
    metadata: bytes


@dataclass(frozen=True, slots=True)
class JoinResult:
    error: ErrorCode
    member_id: str = ""
    generation_id: int = -1
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader: str = ""
    members: tuple[JoinedMember, ...] = ()  # only the leader's result lists them


@dataclass(frozen=True, slots=True)
class SyncResult:
    error: ErrorCode
    protocol_type: str | None = None
    protocol_name: str | None = None
    assignment: bytes = b""


@dataclass(frozen=True, slots=True)
class MemberDescription:
    member_id: str
    instance_id: str | None
    client_id: str
    client_host: str
    metadata: bytes
    assignment: bytes


@dataclass(frozen=True, slots=True)
class GroupDescription:
    group_id: str
    state: str  # Kafka's name of the state (classic: Empty, PreparingRebalance...; consumer: Empty, Assigning...)
    protocol_type: str
    protocol_name: str
    members: tuple[MemberDescription, ...]
    group_type: str = "classic"  # or "consumer" (KIP-848)


# ---- effects -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    """Answer the request that was given ``token``."""

    token: int
    result: JoinResult | SyncResult


@dataclass(frozen=True, slots=True)
class StoreGroup:
    """Write ``records`` (key, value or None for a tombstone) to the partition; when ``generation`` >= 0, call
    ``group_stored(group_id, generation, error)`` once it is replicated (or failed)."""

    group_id: str
    generation: int
    records: tuple[tuple[bytes, bytes | None], ...]


Effect = Reply | StoreGroup


# ---- the state -----------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Member:
    member_id: str
    instance_id: str | None
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocol_type: str
    protocols: tuple[tuple[str, bytes], ...]
    assignment: bytes = b""
    join_token: int | None = None
    sync_token: int | None = None
    deadline_ms: int = 0
    is_new: bool = False
    joined_at_ms: int = 0

    def metadata(self, protocol: str | None) -> bytes:
        for name, data in self.protocols:
            if name == protocol:
                return data
        return b""

    def protocol_names(self) -> set[str]:
        return {name for name, _ in self.protocols}


@dataclass(slots=True)
class Group:
    group_id: str
    state: GroupState = GroupState.EMPTY
    state_timestamp_ms: int = -1
    protocol_type: str | None = None
    protocol_name: str | None = None
    generation: int = 0
    leader: str | None = None
    members: dict[str, Member] = field(default_factory=dict)  # in join order
    static: dict[str, str] = field(default_factory=dict)  # group.instance.id -> member id
    pending: dict[str, int] = field(default_factory=dict)  # KIP-394: member id given, join expected by (ms)
    pending_sync: set[str] = field(default_factory=set)
    join_deadline_ms: int = -1
    initial_delay: bool = False
    initial_remaining_ms: int = 0
    new_member_added: bool = False
    sync_deadline_ms: int = -1
    offsets: dict[tuple[str, int], OffsetValue] = field(default_factory=dict)
    consumer: ConsumerGroupState | None = None  # set: a consumer group (KIP-848), the fields above unused

    def all_joined(self) -> bool:
        return not self.pending and all(m.join_token is not None for m in self.members.values())

    def rebalance_timeout_ms(self) -> int:
        return max((m.rebalance_timeout_ms for m in self.members.values()), default=0)

    def candidate_protocols(self) -> set[str]:
        names: set[str] | None = None
        for m in self.members.values():
            names = m.protocol_names() if names is None else names & m.protocol_names()
        return names or set()

    def supports(self, protocol_type: str, protocols: Sequence[tuple[str, bytes]]) -> bool:
        if not protocol_type or not protocols:
            return False
        if not self.members:
            return True
        return protocol_type == self.protocol_type and bool(self.candidate_protocols() & {n for n, _ in protocols})

    def select_protocol(self) -> str:
        candidates = self.candidate_protocols()
        votes: dict[str, int] = {}
        for m in self.members.values():
            vote = next(name for name, _ in m.protocols if name in candidates)
            votes[vote] = votes.get(vote, 0) + 1
        return max(votes, key=lambda name: votes[name])  # first of the most voted, in vote order

    def fenced(self, instance_id: str | None, member_id: str) -> bool:
        return instance_id is not None and instance_id in self.static and self.static[instance_id] != member_id


_Timer = tuple[int, int, str, str, str]  # deadline, sequence, group id, kind, member id or generation


class ClassicGroups:
    """The groups of one ``__consumer_offsets`` partition."""

    def __init__(self, limits: GroupLimits, rng: random.Random, consumer: ConsumerLimits | None = None) -> None:
        self.limits = limits
        self._rng = rng
        self.consumer_protocol = ConsumerProtocol(consumer or ConsumerLimits(max_size=limits.max_size))
        self.topic_ids: Mapping[str, uuid.UUID] = {}  # the metadata image's, for consumer group records (the shell's)
        self.groups: dict[str, Group] = {}
        self._effects: list[Effect] = []
        self._timers: list[_Timer] = []
        self._sequence = 0
        self.rebalances: dict[str, int] = {}  # rebalances completed since the shell last took them (metrics)
        # What the shell logs, taken with the effects: (group, what happened), e.g. a member removed and why.
        self.events: list[tuple[str, str]] = []

    # ---- the shell's side --------------------------------------------------------------------------------------

    def drain(self) -> list[Effect]:
        effects, self._effects = self._effects, []
        return effects

    def next_deadline_ms(self) -> int | None:
        return self._timers[0][0] if self._timers else None

    def tick(self, now_ms: int) -> None:
        while self._timers and self._timers[0][0] <= now_ms:
            deadline, _, group_id, kind, key = heapq.heappop(self._timers)
            group = self.groups.get(group_id)
            if group is None:
                continue
            if kind == "member":
                self._member_deadline(group, key, deadline, now_ms)
            elif kind == "pending" and group.pending.get(key) == deadline:
                del group.pending[key]
                self._try_complete_join(group, now_ms)
            elif kind == "join" and group.join_deadline_ms == deadline:
                self._join_deadline(group, now_ms)
            elif kind == "sync" and group.sync_deadline_ms == deadline and str(group.generation) == key:
                self._sync_deadline(group, now_ms)
            elif kind == "consumer" and group.consumer is not None:
                before = snapshot(group.consumer)
                for member_id in self.consumer_protocol.expire(group.consumer, now_ms):
                    self.events.append((group_id, f"member {member_id} removed: no heartbeat or revocation in time"))
                self._store_consumer(group, before)
                self._arm_consumer(group, now_ms)

    def close(self) -> None:
        """This shard stopped leading the partition: every waiting request is told to find the new coordinator."""
        for group in self.groups.values():
            for m in group.members.values():
                self._reply_join(m, JoinResult(ErrorCode.NOT_COORDINATOR, m.member_id))
                self._reply_sync(m, SyncResult(ErrorCode.NOT_COORDINATOR))
        self.groups.clear()
        self._timers.clear()

    def _arm(self, deadline_ms: int, group: Group, kind: str, key: str) -> None:
        self._sequence += 1
        heapq.heappush(self._timers, (deadline_ms, self._sequence, group.group_id, kind, key))

    def _heartbeat(self, group: Group, m: Member, now_ms: int) -> None:
        m.deadline_ms = now_ms + m.session_timeout_ms
        self._arm(m.deadline_ms, group, "member", m.member_id)

    def _new_member_id(self, client_id: str) -> str:
        return f"{client_id}-{uuid.UUID(int=self._rng.getrandbits(128), version=4)}"

    def _group_for_join(self, req: JoinRequest, now_ms: int) -> Group | ErrorCode:
        group = self.groups.get(req.group_id)
        if group is not None and group.consumer is not None:
            if group.consumer.members:
                return ErrorCode.INCONSISTENT_GROUP_PROTOCOL  # a consumer group (KIP-848) with members
            group.consumer = None  # an empty consumer group becomes a classic one, its offsets kept
        if group is None or group.state is GroupState.DEAD:
            if req.member_id:
                return ErrorCode.UNKNOWN_MEMBER_ID
            group = Group(req.group_id, state_timestamp_ms=now_ms)
            self.groups[req.group_id] = group
        return group

    # ---- JoinGroup ---------------------------------------------------------------------------------------------

    def join(self, req: JoinRequest, token: int, now_ms: int) -> None:
        """Answered through a ``Reply`` with ``token``: at once for errors, else when the rebalance completes."""
        error = self._join_error(req)
        if error is not None:
            self._effects.append(Reply(token, JoinResult(error, req.member_id)))
            return
        group = self._group_for_join(req, now_ms)
        if isinstance(group, ErrorCode):
            self._effects.append(Reply(token, JoinResult(group, req.member_id)))
        elif not req.member_id:
            self._join_unknown(group, req, token, now_ms)
        else:
            self._join_known(group, req, token, now_ms)

    def _join_error(self, req: JoinRequest) -> ErrorCode | None:
        limits = self.limits
        if not req.group_id:
            return ErrorCode.INVALID_GROUP_ID
        if not limits.min_session_timeout_ms <= req.session_timeout_ms <= limits.max_session_timeout_ms:
            return ErrorCode.INVALID_SESSION_TIMEOUT
        if sum(len(data) for _, data in req.protocols) > limits.member_metadata_max_bytes:
            return ErrorCode.INVALID_REQUEST
        if len({name for name, _ in req.protocols}) != len(req.protocols):
            return ErrorCode.INCONSISTENT_GROUP_PROTOCOL
        return None

    def _join_unknown(self, group: Group, req: JoinRequest, token: int, now_ms: int) -> None:
        if not group.supports(req.protocol_type, req.protocols):
            self._effects.append(Reply(token, JoinResult(ErrorCode.INCONSISTENT_GROUP_PROTOCOL)))
            return
        existing = group.static.get(req.instance_id) if req.instance_id is not None else None
        if existing is None and len(group.members) + len(group.pending) >= self.limits.max_size:
            self._effects.append(Reply(token, JoinResult(ErrorCode.GROUP_MAX_SIZE_REACHED)))
            return
        member_id = self._new_member_id(req.client_id)
        if existing is not None:
            self._replace_static_member(group, existing, member_id, req, token, now_ms)
        elif req.instance_id is None and req.require_known_member_id:
            deadline = now_ms + req.session_timeout_ms
            group.pending[member_id] = deadline
            self._arm(deadline, group, "pending", member_id)
            self._effects.append(Reply(token, JoinResult(ErrorCode.MEMBER_ID_REQUIRED, member_id)))
        else:
            self._add_member(group, member_id, req, token, now_ms)

    def _join_known(self, group: Group, req: JoinRequest, token: int, now_ms: int) -> None:
        if req.member_id in group.pending:
            if not group.supports(req.protocol_type, req.protocols):
                self._effects.append(Reply(token, JoinResult(ErrorCode.INCONSISTENT_GROUP_PROTOCOL, req.member_id)))
            else:
                self._add_member(group, req.member_id, req, token, now_ms)
            return
        error = self._member_error(group, req.member_id, req.instance_id)
        if error is None and not group.supports(req.protocol_type, req.protocols):
            error = ErrorCode.INCONSISTENT_GROUP_PROTOCOL
        if error is not None:
            self._effects.append(Reply(token, JoinResult(error, req.member_id)))
            return
        m = group.members[req.member_id]
        unchanged = m.protocols == req.protocols and m.protocol_type == req.protocol_type
        if unchanged and group.state is GroupState.COMPLETING_REBALANCE:
            # The member lost its JoinGroup answer: the current generation again (with the members for the leader).
            self._heartbeat(group, m, now_ms)
            self._effects.append(Reply(token, self._join_result(group, m, leader_view=True)))
        elif unchanged and group.state is GroupState.STABLE and m.member_id != group.leader:
            self._heartbeat(group, m, now_ms)
            self._effects.append(Reply(token, self._join_result(group, m, leader_view=False)))
        else:
            self._update_member(group, m, req, token, now_ms)

    def _member_error(self, group: Group, member_id: str, instance_id: str | None) -> ErrorCode | None:
        """Kafka's checks of a request from a current member, in its order."""
        if group.state is GroupState.DEAD:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        if group.fenced(instance_id, member_id):
            return ErrorCode.FENCED_INSTANCE_ID
        if member_id not in group.members:
            return ErrorCode.UNKNOWN_MEMBER_ID
        return None

    def _join_result(self, group: Group, m: Member, *, leader_view: bool) -> JoinResult:
        members: tuple[JoinedMember, ...] = ()
        if leader_view and m.member_id == group.leader:
            members = tuple(
                JoinedMember(o.member_id, o.instance_id, o.metadata(group.protocol_name))
                for o in group.members.values()
            )
        return JoinResult(
            ErrorCode.NONE,
            m.member_id,
            group.generation,
            group.protocol_type,
            group.protocol_name,
            group.leader or "",
            members,
        )

    def _add_member(self, group: Group, member_id: str, req: JoinRequest, token: int, now_ms: int) -> None:
        group.pending.pop(member_id, None)
        m = Member(
            member_id,
            req.instance_id,
            req.client_id,
            req.client_host,
            req.session_timeout_ms,
            req.rebalance_timeout_ms,
            req.protocol_type,
            req.protocols,
            join_token=token,
            is_new=True,
            joined_at_ms=now_ms,
        )
        if not group.members:
            group.protocol_type = req.protocol_type
        group.members[member_id] = m
        if req.instance_id is not None:
            group.static[req.instance_id] = member_id
        if group.leader is None:
            group.leader = member_id
        group.new_member_added = True
        self._heartbeat(group, m, now_ms)
        self._rebalance_for_join(group, now_ms)

    def _update_member(self, group: Group, m: Member, req: JoinRequest, token: int, now_ms: int) -> None:
        if m.join_token is not None and m.join_token != token:  # the client gave up on its earlier join
            self._reply_join(m, JoinResult(ErrorCode.UNKNOWN_MEMBER_ID, m.member_id))
        m.protocols = req.protocols
        m.protocol_type = req.protocol_type
        m.session_timeout_ms = req.session_timeout_ms
        m.rebalance_timeout_ms = req.rebalance_timeout_ms
        m.client_id, m.client_host = req.client_id, req.client_host
        m.join_token = token
        self._heartbeat(group, m, now_ms)
        self._rebalance_for_join(group, now_ms)

    def _rebalance_for_join(self, group: Group, now_ms: int) -> None:
        if group.state is GroupState.PREPARING_REBALANCE:
            self._try_complete_join(group, now_ms)
        else:
            self._prepare_rebalance(group, now_ms)

    def _replace_static_member(
        self, group: Group, old_id: str, member_id: str, req: JoinRequest, token: int, now_ms: int
    ) -> None:
        """KIP-345: a static member that rejoins without its member id (a restarted process) takes over the old
        member's place under a new id; requests with the old id are fenced from now on."""
        m = group.members.pop(old_id)
        self._reply_join(m, JoinResult(ErrorCode.FENCED_INSTANCE_ID, old_id))
        self._reply_sync(m, SyncResult(ErrorCode.FENCED_INSTANCE_ID))
        m.member_id = member_id
        group.members[member_id] = m
        assert req.instance_id is not None
        group.static[req.instance_id] = member_id
        if old_id in group.pending_sync:
            group.pending_sync.discard(old_id)
            group.pending_sync.add(member_id)
        was_leader = group.leader == old_id
        if was_leader:
            group.leader = member_id
        unchanged = m.protocols == req.protocols and m.protocol_type == req.protocol_type
        if group.state is GroupState.STABLE and unchanged and not was_leader:
            # Same subscription: the group's assignment stands; the member syncs and gets its old share back.
            m.client_id, m.client_host = req.client_id, req.client_host
            self._heartbeat(group, m, now_ms)
            self._effects.append(Reply(token, self._join_result(group, m, leader_view=False)))
            self._store(group, wait=False)
        else:
            self._update_member(group, m, req, token, now_ms)

    # ---- rebalance ---------------------------------------------------------------------------------------------

    def _prepare_rebalance(self, group: Group, now_ms: int) -> None:
        self.events.append(
            (group.group_id, f"rebalance begins (was {group.state.value}, generation {group.generation})")
        )
        if group.state is GroupState.COMPLETING_REBALANCE:
            for m in group.members.values():
                m.assignment = b""
                self._reply_sync(m, SyncResult(ErrorCode.REBALANCE_IN_PROGRESS))
        group.pending_sync.clear()
        group.sync_deadline_ms = -1
        if group.state is GroupState.EMPTY:
            delay = min(self.limits.initial_rebalance_delay_ms, group.rebalance_timeout_ms())
            group.initial_delay = True
            group.initial_remaining_ms = max(group.rebalance_timeout_ms() - delay, 0)
            group.new_member_added = False
        else:
            delay = group.rebalance_timeout_ms()
            group.initial_delay = False
        self._transition(group, GroupState.PREPARING_REBALANCE, now_ms)
        group.join_deadline_ms = now_ms + delay
        self._arm(group.join_deadline_ms, group, "join", "")
        self._try_complete_join(group, now_ms)

    def _maybe_prepare_rebalance(self, group: Group, now_ms: int) -> None:
        if group.state in (GroupState.STABLE, GroupState.COMPLETING_REBALANCE, GroupState.EMPTY):
            self._prepare_rebalance(group, now_ms)

    def _try_complete_join(self, group: Group, now_ms: int) -> None:
        if group.state is GroupState.PREPARING_REBALANCE and not group.initial_delay and group.all_joined():
            self._complete_join(group, now_ms)

    def _join_deadline(self, group: Group, now_ms: int) -> None:
        if group.initial_delay and group.new_member_added and group.initial_remaining_ms > 0:
            group.new_member_added = False
            delay = min(self.limits.initial_rebalance_delay_ms, group.initial_remaining_ms)
            group.initial_remaining_ms -= delay
            group.join_deadline_ms = now_ms + max(delay, 1)
            self._arm(group.join_deadline_ms, group, "join", "")
            return
        group.initial_delay = False
        self._complete_join(group, now_ms)

    def _complete_join(self, group: Group, now_ms: int) -> None:
        for m in [m for m in group.members.values() if m.join_token is None and m.instance_id is None]:
            self._remove(group, m, "did not rejoin within the rebalance timeout")
        group.join_deadline_ms = -1
        if group.members and all(m.join_token is None for m in group.members.values()):
            # Only static members that did not rejoin: wait another rebalance timeout for them (as Kafka does).
            group.join_deadline_ms = now_ms + group.rebalance_timeout_ms()
            self._arm(group.join_deadline_ms, group, "join", "")
            return
        group.generation += 1
        self.rebalances[group.group_id] = self.rebalances.get(group.group_id, 0) + 1
        if not group.members:
            group.protocol_name = None
            group.protocol_type = None if not group.offsets else group.protocol_type
            group.leader = None
            self._transition(group, GroupState.EMPTY, now_ms)
            self._store(group, wait=False)
            return
        group.protocol_name = group.select_protocol()
        if group.leader is None or group.members[group.leader].join_token is None:
            group.leader = next(m.member_id for m in group.members.values() if m.join_token is not None)
        self._transition(group, GroupState.COMPLETING_REBALANCE, now_ms)
        self.events.append(
            (
                group.group_id,
                f"generation {group.generation} with {len(group.members)} member(s), protocol "
                f"{group.protocol_name}, leader {group.leader}",
            )
        )
        group.pending_sync = set(group.members)
        group.sync_deadline_ms = now_ms + group.rebalance_timeout_ms()
        self._arm(group.sync_deadline_ms, group, "sync", str(group.generation))
        for m in group.members.values():
            if m.join_token is not None:
                self._reply_join(m, self._join_result(group, m, leader_view=True))
                m.is_new = False
                self._heartbeat(group, m, now_ms)

    def _sync_deadline(self, group: Group, now_ms: int) -> None:
        """Members that joined a generation and never synced are gone (their client died mid-rebalance)."""
        if group.state not in (GroupState.COMPLETING_REBALANCE, GroupState.STABLE) or not group.pending_sync:
            return
        for member_id in list(group.pending_sync):
            m = group.members.get(member_id)
            if m is not None:
                self._remove(group, m, "did not sync within the rebalance timeout")
        group.pending_sync.clear()
        self._after_removal(group, now_ms)

    def _member_deadline(self, group: Group, member_id: str, deadline: int, now_ms: int) -> None:
        m = group.members.get(member_id)
        if m is None or m.deadline_ms != deadline:
            return
        waited_too_long = m.is_new and now_ms >= m.joined_at_ms + self.limits.new_member_join_timeout_ms
        if (m.join_token is not None and not waited_too_long) or m.sync_token is not None:
            self._heartbeat(group, m, now_ms)  # a member waiting for the coordinator is alive (Kafka's keep-alive)
            return
        self._remove(group, m, f"no heartbeat within its session timeout ({m.session_timeout_ms} ms)")
        self._after_removal(group, now_ms)

    def _after_removal(self, group: Group, now_ms: int) -> None:
        if group.state is GroupState.PREPARING_REBALANCE:
            self._try_complete_join(group, now_ms)
        elif group.state in (GroupState.STABLE, GroupState.COMPLETING_REBALANCE):
            self._prepare_rebalance(group, now_ms)

    def _remove(self, group: Group, m: Member, why: str) -> None:
        self.events.append((group.group_id, f"member {m.member_id} removed: {why}"))
        del group.members[m.member_id]
        if m.instance_id is not None and group.static.get(m.instance_id) == m.member_id:
            del group.static[m.instance_id]
        group.pending_sync.discard(m.member_id)
        self._reply_join(m, JoinResult(ErrorCode.UNKNOWN_MEMBER_ID, m.member_id))
        self._reply_sync(m, SyncResult(ErrorCode.UNKNOWN_MEMBER_ID))
        if group.leader == m.member_id:
            group.leader = next(iter(group.members), None)

    def _transition(self, group: Group, state: GroupState, now_ms: int) -> None:
        group.state = state
        group.state_timestamp_ms = now_ms

    def _reply_join(self, m: Member, result: JoinResult) -> None:
        if m.join_token is not None:
            self._effects.append(Reply(m.join_token, result))
            m.join_token = None

    def _reply_sync(self, m: Member, result: SyncResult) -> None:
        if m.sync_token is not None:
            self._effects.append(Reply(m.sync_token, result))
            m.sync_token = None

    # ---- SyncGroup ---------------------------------------------------------------------------------------------

    def sync(
        self,
        group_id: str,
        member_id: str,
        instance_id: str | None,
        generation: int,
        protocol: tuple[str | None, str | None],
        assignments: Mapping[str, bytes],
        token: int,
        now_ms: int,
    ) -> None:
        """Answered through a ``Reply`` with ``token``: at once when Stable or on error, else once the leader's
        assignment is written. ``protocol`` is the (type, name) the client states (v5+), None when it does not."""
        group = self.groups.get(group_id)
        error = ErrorCode.UNKNOWN_MEMBER_ID if group is None else self._sync_error(group, member_id, instance_id)
        if error is None and group is not None and generation != group.generation:
            error = ErrorCode.ILLEGAL_GENERATION
        if error is None and group is not None and not _protocol_matches(group, protocol):
            error = ErrorCode.INCONSISTENT_GROUP_PROTOCOL
        if error is not None or group is None:
            self._effects.append(Reply(token, SyncResult(error or ErrorCode.UNKNOWN_MEMBER_ID)))
            return
        m = group.members[member_id]
        group.pending_sync.discard(member_id)
        self._heartbeat(group, m, now_ms)
        if group.state is GroupState.STABLE:
            self._effects.append(Reply(token, _sync_result(group, m)))
            return
        self._reply_sync(m, SyncResult(ErrorCode.REBALANCE_IN_PROGRESS))  # a duplicate: the earlier one gives up
        m.sync_token = token
        if member_id == group.leader:
            for other in group.members.values():
                other.assignment = assignments.get(other.member_id, b"")
            self._store(group, wait=True)

    def _sync_error(self, group: Group, member_id: str, instance_id: str | None) -> ErrorCode | None:
        error = self._member_error(group, member_id, instance_id)
        if error is not None:
            return error
        if group.state is GroupState.EMPTY:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if group.state is GroupState.PREPARING_REBALANCE:
            return ErrorCode.REBALANCE_IN_PROGRESS
        return None

    def group_stored(self, group_id: str, generation: int, error: ErrorCode, now_ms: int) -> None:
        """The shell wrote a ``StoreGroup`` that asked to be told (the leader's assignment)."""
        group = self.groups.get(group_id)
        if group is None or group.generation != generation or group.state is not GroupState.COMPLETING_REBALANCE:
            return
        if error is not ErrorCode.NONE:
            for m in group.members.values():
                m.assignment = b""
                self._reply_sync(m, SyncResult(error))
            self._prepare_rebalance(group, now_ms)
            return
        self._transition(group, GroupState.STABLE, now_ms)
        for m in group.members.values():
            self._reply_sync(m, _sync_result(group, m))

    def _store(self, group: Group, *, wait: bool) -> None:
        value = GroupValue(
            protocol_type=group.protocol_type or "",
            generation=group.generation,
            protocol=group.protocol_name,
            leader=group.leader,
            current_state_timestamp=group.state_timestamp_ms,
            members=tuple(
                MemberValue(
                    m.member_id,
                    m.instance_id,
                    m.client_id,
                    m.client_host,
                    m.rebalance_timeout_ms,
                    m.session_timeout_ms,
                    m.metadata(group.protocol_name),
                    m.assignment,
                )
                for m in group.members.values()
            ),
        )
        record = (encode_key(GroupKey(group.group_id)), encode_group_value(value))
        self._effects.append(StoreGroup(group.group_id, group.generation if wait else -1, (record,)))

    # ---- Heartbeat and LeaveGroup ------------------------------------------------------------------------------

    def heartbeat(
        self, group_id: str, member_id: str, instance_id: str | None, generation: int, now_ms: int
    ) -> ErrorCode:
        group = self.groups.get(group_id)
        if group is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        error = self._member_error(group, member_id, instance_id)
        if error is not None:
            return error
        if generation != group.generation:
            return ErrorCode.ILLEGAL_GENERATION
        if group.state is GroupState.EMPTY:
            return ErrorCode.UNKNOWN_MEMBER_ID
        self._heartbeat(group, group.members[member_id], now_ms)
        if group.state is GroupState.PREPARING_REBALANCE:
            return ErrorCode.REBALANCE_IN_PROGRESS
        return ErrorCode.NONE

    def leave(
        self, group_id: str, members: Sequence[tuple[str, str | None]], now_ms: int
    ) -> tuple[ErrorCode, list[ErrorCode]]:
        """LeaveGroup: the group's error and one per (member id, instance id); v3+ may name members by instance id
        only (member id "")."""
        group = self.groups.get(group_id)
        if group is None or group.state is GroupState.DEAD:
            return ErrorCode.UNKNOWN_MEMBER_ID, [ErrorCode.UNKNOWN_MEMBER_ID] * len(members)
        errors = [self._leave_one(group, member_id, instance_id) for member_id, instance_id in members]
        if any(e is ErrorCode.NONE for e in errors):
            self._after_removal(group, now_ms)
        return ErrorCode.NONE, errors

    def _leave_one(self, group: Group, member_id: str, instance_id: str | None) -> ErrorCode:
        if instance_id is not None:
            known = group.static.get(instance_id)
            if known is None:
                return ErrorCode.UNKNOWN_MEMBER_ID
            if member_id and member_id != known:
                return ErrorCode.FENCED_INSTANCE_ID
            member_id = known
        if group.pending.pop(member_id, None) is not None:
            return ErrorCode.NONE
        m = group.members.get(member_id)
        if m is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        self._remove(group, m, "it left the group")
        return ErrorCode.NONE

    # ---- offsets -----------------------------------------------------------------------------------------------

    def validate_commit(
        self, group_id: str, member_id: str, instance_id: str | None, generation: int, now_ms: int
    ) -> ErrorCode:
        """May these offsets be committed? Creates the group of a simple consumer (generation -1, no member)."""
        group = self.groups.get(group_id)
        if group is None or group.state is GroupState.DEAD:
            if generation >= 0:
                return ErrorCode.ILLEGAL_GENERATION
            self.groups[group_id] = Group(group_id, state_timestamp_ms=now_ms)
            return ErrorCode.NONE
        if group.consumer is not None:
            return _consumer_commit_error(group.consumer, member_id, generation)
        if group.fenced(instance_id, member_id):
            return ErrorCode.FENCED_INSTANCE_ID
        if generation < 0 and group.state is GroupState.EMPTY:
            return ErrorCode.NONE
        if group.state is GroupState.COMPLETING_REBALANCE:
            return ErrorCode.REBALANCE_IN_PROGRESS
        m = group.members.get(member_id)
        if m is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if generation != group.generation:
            return ErrorCode.ILLEGAL_GENERATION
        self._heartbeat(group, m, now_ms)
        return ErrorCode.NONE

    def offsets_committed(self, group_id: str, offsets: Mapping[tuple[str, int], OffsetValue | None]) -> None:
        """The shell wrote these commits (None: a deletion); they are now what OffsetFetch returns."""
        group = self.groups.get(group_id)
        if group is None:
            return
        for tp, value in offsets.items():
            if value is None:
                group.offsets.pop(tp, None)
            else:
                group.offsets[tp] = value

    def committed(
        self, group_id: str, partitions: Iterable[tuple[str, int]] | None
    ) -> dict[tuple[str, int], OffsetValue]:
        """Committed offsets of ``group_id`` (all of them when ``partitions`` is None); absent ones are left out."""
        group = self.groups.get(group_id)
        if group is None:
            return {}
        if partitions is None:
            return dict(group.offsets)
        return {tp: group.offsets[tp] for tp in partitions if tp in group.offsets}

    def offset_tombstones(self, group_id: str, partitions: Iterable[tuple[str, int]]) -> tuple[tuple[bytes, None], ...]:
        return tuple((encode_key(OffsetKey(group_id, t, p)), None) for t, p in partitions)

    def expire_offsets(self, now_ms: int, retention_ms: int) -> list[StoreGroup]:
        """KIP-211: the offsets of a group that has been Empty for ``retention_ms`` (and not committed to since)
        expire; a group left with no offsets and no members is then deleted. Returns what to write."""
        writes: list[StoreGroup] = []
        for group in list(self.groups.values()):
            if group.state is not GroupState.EMPTY or (group.consumer is not None and group.consumer.members):
                continue
            expired = [
                tp
                for tp, v in group.offsets.items()
                if now_ms >= max(v.commit_timestamp, group.state_timestamp_ms) + retention_ms
            ]
            records: tuple[tuple[bytes, bytes | None], ...] = self.offset_tombstones(group.group_id, expired)
            for tp in expired:
                del group.offsets[tp]
            if not group.offsets:
                records += ((encode_key(GroupKey(group.group_id)), None),)
                del self.groups[group.group_id]
            if records:
                writes.append(StoreGroup(group.group_id, -1, records))
        return writes

    # ---- administration ----------------------------------------------------------------------------------------

    def describe(self, group_id: str) -> GroupDescription:
        group = self.groups.get(group_id)
        if group is None:
            return GroupDescription(group_id, GroupState.DEAD.value, "", "", ())
        if group.consumer is not None:
            c = group.consumer
            members = tuple(
                MemberDescription(m.member_id, m.instance_id, m.client_id, m.client_host, b"", b"")
                for m in c.members.values()
            )
            return GroupDescription(group_id, c.state_name, CONSUMER_PROTOCOL_TYPE, c.assignor, members, "consumer")
        stable = group.state is GroupState.STABLE
        return GroupDescription(
            group_id,
            group.state.value,
            group.protocol_type or "",
            (group.protocol_name or "") if stable else "",
            tuple(
                MemberDescription(
                    m.member_id,
                    m.instance_id,
                    m.client_id,
                    m.client_host,
                    m.metadata(group.protocol_name) if stable else b"",
                    m.assignment if stable else b"",
                )
                for m in group.members.values()
            ),
        )

    def delete(self, group_id: str) -> tuple[ErrorCode, tuple[tuple[bytes, bytes | None], ...]]:
        """DeleteGroups of one group: its error and the tombstones to write (offsets, then the group)."""
        group = self.groups.get(group_id)
        if group is None or group.state is GroupState.DEAD:
            return ErrorCode.GROUP_ID_NOT_FOUND, ()
        if group.state is not GroupState.EMPTY or (group.consumer is not None and group.consumer.members):
            return ErrorCode.NON_EMPTY_GROUP, ()
        records: tuple[tuple[bytes, bytes | None], ...] = self.offset_tombstones(group_id, group.offsets)
        records += ((encode_key(GroupKey(group_id)), None),)
        if group.consumer is not None:
            for kind in (consumer_records.TARGET_EPOCH_TYPE, consumer_records.GROUP_EPOCH_TYPE):
                records += ((consumer_records.encode_key(kind, group_id), None),)
        group.state = GroupState.DEAD
        del self.groups[group_id]
        return ErrorCode.NONE, records

    def subscribed_topics(self, group_id: str) -> set[str] | None:
        """The topics a "consumer" group's members subscribe to (None: not a consumer group, or unreadable)."""
        group = self.groups.get(group_id)
        if group is None or group.protocol_type != CONSUMER_PROTOCOL_TYPE:
            return None
        topics: set[str] = set()
        for m in group.members.values():
            parsed = consumer_subscription_topics(m.metadata(group.protocol_name) or m.protocols[0][1])
            if parsed is None:
                return None
            topics |= parsed
        return topics

    # ---- the consumer group protocol (KIP-848) -------------------------------------------------------------------

    def consumer_heartbeat(
        self, req: HeartbeatRequest, partitions: Mapping[str, int], now_ms: int
    ) -> tuple[HeartbeatResult, tuple[tuple[bytes, bytes | None], ...]]:
        """ConsumerGroupHeartbeat; ``partitions``: the partition count of every topic of the metadata image. Returns
        the answer and the records to write before it is sent (Kafka answers once they are committed)."""
        problem = validate(req)
        if problem is not None:
            return HeartbeatResult(ErrorCode.INVALID_REQUEST, problem), ()
        group = self.groups.get(req.group_id)
        if group is not None and group.consumer is None:
            if group.members or group.pending:
                return HeartbeatResult(ErrorCode.GROUP_ID_NOT_FOUND, f"group {req.group_id!r} is a classic group"), ()
            group.consumer = ConsumerGroupState()  # an empty classic group becomes a consumer group, offsets kept
        if group is None:
            if req.member_epoch != 0:
                return HeartbeatResult(ErrorCode.UNKNOWN_MEMBER_ID, f"group {req.group_id!r} does not exist"), ()
            group = self.groups[req.group_id] = Group(req.group_id, state_timestamp_ms=now_ms)
            group.consumer = ConsumerGroupState()
        assert group.consumer is not None
        before = snapshot(group.consumer)
        result = self.consumer_protocol.heartbeat(group.consumer, req, partitions, now_ms)
        if group.consumer.group_epoch != before[0]:
            self.rebalances[group.group_id] = self.rebalances.get(group.group_id, 0) + 1
            if not group.consumer.members:
                group.state_timestamp_ms = now_ms  # emptied: offsets expire from now (KIP-211)
        self._arm_consumer(group, now_ms)
        return result, self._consumer_records(group, before)

    def _consumer_records(self, group: Group, before: Snapshot) -> tuple[tuple[bytes, bytes | None], ...]:
        assert group.consumer is not None
        out = []
        for rec in records_between(group.group_id, before, snapshot(group.consumer)):
            key = consumer_records.encode_key(rec.kind, rec.group, rec.member)
            value = None if rec.value is None else consumer_records.encode_value(rec.value, self.topic_ids)
            out.append((key, value))
        return tuple(out)

    def _store_consumer(self, group: Group, before: Snapshot) -> None:
        records = self._consumer_records(group, before)
        if records:
            self._effects.append(StoreGroup(group.group_id, -1, records))

    def load_consumer(self, rec: consumer_records.ConsumerRecord, now_ms: int) -> None:
        """Replay a consumer group record (KIP-848) while loading the partition."""
        group = self.groups.get(rec.group)
        if group is None:
            group = self.groups[rec.group] = Group(rec.group, state_timestamp_ms=now_ms)
        if group.consumer is None:
            group.consumer = ConsumerGroupState(counts_known=False)
        load_record(group.consumer, rec)

    def _arm_consumer(self, group: Group, now_ms: int) -> None:
        assert group.consumer is not None
        deadline = self.consumer_protocol.next_deadline_ms(group.consumer)
        if deadline is not None:
            self._arm(max(deadline, now_ms), group, "consumer", "")

    def consumer_group(self, group_id: str) -> ConsumerGroupState | None:
        group = self.groups.get(group_id)
        return None if group is None else group.consumer

    # ---- loading -----------------------------------------------------------------------------------------------

    def load_group(self, group_id: str, value: GroupValue | None, now_ms: int) -> None:
        """Replay a group metadata record (None: a tombstone) while loading the partition."""
        if value is None:
            self.groups.pop(group_id, None)
            return
        group = self.groups.get(group_id) or Group(group_id)
        self.groups[group_id] = group
        group.protocol_type = value.protocol_type or None
        group.generation = value.generation
        group.protocol_name = value.protocol
        group.leader = value.leader
        group.state_timestamp_ms = value.current_state_timestamp if value.current_state_timestamp >= 0 else now_ms
        group.members = {
            mv.member_id: Member(
                mv.member_id,
                mv.group_instance_id,
                mv.client_id,
                mv.client_host,
                mv.session_timeout_ms,
                mv.rebalance_timeout_ms,
                value.protocol_type,
                ((value.protocol or "", mv.subscription),),
                mv.assignment,
            )
            for mv in value.members
        }
        group.static = {m.instance_id: m.member_id for m in group.members.values() if m.instance_id is not None}
        group.state = GroupState.STABLE if group.members else GroupState.EMPTY

    def load_offset(self, key: OffsetKey, value: OffsetValue | None, now_ms: int) -> None:
        group = self.groups.get(key.group)
        if group is None:
            if value is None:
                return
            group = self.groups[key.group] = Group(key.group, state_timestamp_ms=now_ms)
        if value is None:
            group.offsets.pop((key.topic, key.partition), None)
        else:
            group.offsets[(key.topic, key.partition)] = value

    def loaded(self, now_ms: int) -> None:
        """Loading is over: every loaded member must heartbeat within its session timeout from now."""
        for group in self.groups.values():
            for m in group.members.values():
                self._heartbeat(group, m, now_ms)
            if group.consumer is not None:
                for cm in group.consumer.members.values():
                    cm.deadline_ms = now_ms + self.consumer_protocol.limits.session_timeout_ms
                self._arm_consumer(group, now_ms)


def _consumer_commit_error(c: ConsumerGroupState, member_id: str, epoch: int) -> ErrorCode:
    """KIP-848's commit check: the member and its current epoch (an admin's or a simple consumer's commit, with no
    member, only while the group has no members)."""
    if not member_id and epoch < 0:
        return ErrorCode.NONE if not c.members else ErrorCode.UNKNOWN_MEMBER_ID
    m = c.members.get(member_id)
    if m is None:
        return ErrorCode.UNKNOWN_MEMBER_ID
    if epoch > m.member_epoch:
        return ErrorCode.FENCED_MEMBER_EPOCH
    if epoch < m.member_epoch:
        return ErrorCode.STALE_MEMBER_EPOCH
    return ErrorCode.NONE


def _protocol_matches(group: Group, protocol: tuple[str | None, str | None]) -> bool:
    protocol_type, name = protocol
    if protocol_type is not None and protocol_type != group.protocol_type:
        return False
    return name is None or name == group.protocol_name


def _sync_result(group: Group, m: Member) -> SyncResult:
    return SyncResult(ErrorCode.NONE, group.protocol_type, group.protocol_name, m.assignment)


def consumer_subscription_topics(metadata: bytes) -> set[str] | None:
    """The topics of a ConsumerProtocolSubscription (any version: they all start with int16 version, then an
    array of strings; v0-v3 are not flexible, which is all clients write in the classic protocol)."""
    try:
        pos = 2
        (count,) = _I32.unpack_from(metadata, pos)
        pos += 4
        if not 0 <= count <= len(metadata):
            return None
        topics = set()
        for _ in range(count):
            (length,) = _I16.unpack_from(metadata, pos)
            pos += 2
            if length < 0 or pos + length > len(metadata):
                return None
            topics.add(metadata[pos : pos + length].decode())
            pos += length
        return topics
    except (struct.error, UnicodeDecodeError):
        return None
