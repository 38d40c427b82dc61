"""The classic group state machine (rafka_shards.groups.classic) driven with a fake clock, no I/O.

Each test names the Kafka rule it checks (GroupCoordinator / GroupMetadata semantics, KIP-345, KIP-394, KIP-814).
"""

from __future__ import annotations

import random

import pytest

from rafka_shards.groups import offsets_records as recs
from rafka_shards.groups.classic import (
    ClassicGroups,
    GroupLimits,
    GroupState,
    JoinRequest,
    JoinResult,
    Reply,
    StoreGroup,
    SyncResult,
    consumer_subscription_topics,
)
from rafka_shards.model import ErrorCode

SESSION_MS = 10_000
REBALANCE_MS = 30_000


class Harness:
    def __init__(self, **limits: int) -> None:
        self.groups = ClassicGroups(GroupLimits(initial_rebalance_delay_ms=0, **limits), random.Random(7))
        self.now = 1_000_000
        self.token = 0
        self.replies: dict[int, JoinResult | SyncResult] = {}
        self.stores: list[StoreGroup] = []

    def pump(self) -> None:
        for e in self.groups.drain():
            if isinstance(e, Reply):
                assert e.token not in self.replies, "a request answered twice"
                self.replies[e.token] = e.result
            else:
                self.stores.append(e)

    def advance(self, ms: int) -> None:
        self.now += ms
        self.groups.tick(self.now)
        self.pump()

    def join(
        self,
        member_id: str = "",
        *,
        group: str = "g",
        instance: str | None = None,
        protocols: tuple[tuple[str, bytes], ...] = (("range", b"m"),),
        session_ms: int = SESSION_MS,
        protocol_type: str = "consumer",
    ) -> int:
        self.token += 1
        req = JoinRequest(
            group,
            member_id,
            instance,
            protocol_type,
            protocols,
            session_ms,
            REBALANCE_MS,
            "client",
            "/127.0.0.1",
            require_known_member_id=True,
        )
        self.groups.join(req, self.token, self.now)
        self.pump()
        return self.token

    def join_settled(self, member_id: str = "", **kw: object) -> int:
        token = self.join(member_id, **kw)  # type: ignore[arg-type]
        self.settle()
        return token

    def settle(self) -> None:
        """Let a zero initial delay run out (it extends itself while members keep arriving)."""
        for _ in range(3):
            self.advance(1)

    def sync(
        self,
        member_id: str,
        generation: int,
        assignments: dict[str, bytes] | None = None,
        *,
        group: str = "g",
        instance: str | None = None,
    ) -> int:
        self.token += 1
        self.groups.sync(group, member_id, instance, generation, (None, None), assignments or {}, self.token, self.now)
        self.pump()
        return self.token

    def store_done(self, error: ErrorCode = ErrorCode.NONE) -> None:
        for s in self.stores:
            if s.generation >= 0:
                self.groups.group_stored(s.group_id, s.generation, error, self.now)
        self.stores.clear()
        self.pump()

    def joined(self, token: int) -> JoinResult:
        r = self.replies.pop(token)
        assert isinstance(r, JoinResult)
        return r

    def synced(self, token: int) -> SyncResult:
        r = self.replies.pop(token)
        assert isinstance(r, SyncResult)
        return r

    def new_member(self, **kw: object) -> str:
        """KIP-394: the first join gets MEMBER_ID_REQUIRED and the id to join with."""
        r = self.joined(self.join(**kw))  # type: ignore[arg-type]
        assert r.error is ErrorCode.MEMBER_ID_REQUIRED and r.member_id
        return r.member_id

    def state(self, group: str = "g") -> GroupState:
        return self.groups.groups[group].state


def stable_group(h: Harness, n: int) -> list[str]:
    """n members joined, synced, Stable."""
    ids = [h.new_member() for _ in range(n)]
    tokens = [h.join(m) for m in ids]
    h.settle()
    results = [h.joined(t) for t in tokens]
    leader = next(r for r in results if r.members)
    gen = leader.generation_id
    syncs = [h.sync(m, gen, {x: x.encode() for x in ids} if m == leader.member_id else None) for m in ids]
    h.store_done()
    for m, t in zip(ids, syncs, strict=True):
        assert h.synced(t).assignment == m.encode()
    assert h.state() is GroupState.STABLE
    return ids


def test_first_join_requires_a_member_id_then_one_member_becomes_leader_and_stable() -> None:
    h = Harness()
    m = h.new_member()
    t = h.join(m)
    h.settle()
    r = h.joined(t)
    assert r.error is ErrorCode.NONE and r.generation_id == 1 and r.leader == m
    assert r.protocol_name == "range" and [x.member_id for x in r.members] == [m]
    assert h.state() is GroupState.COMPLETING_REBALANCE
    t = h.sync(m, 1, {m: b"assignment"})
    assert t not in h.replies, "the leader's sync waits for the assignment to be written"
    assert h.stores and h.stores[0].generation == 1
    key, value = h.stores[0].records[0]
    assert recs.decode_key(key) == recs.GroupKey("g")
    assert value is not None and recs.decode_group_value(value).members[0].assignment == b"assignment"
    h.store_done()
    assert h.synced(t).assignment == b"assignment"
    assert h.state() is GroupState.STABLE


def test_a_second_member_triggers_a_rebalance_that_waits_for_every_member() -> None:
    h = Harness()
    (a,) = stable_group(h, 1)
    b = h.new_member()
    tb = h.join(b)
    assert h.state() is GroupState.PREPARING_REBALANCE and tb not in h.replies
    assert h.groups.heartbeat("g", a, None, 1, h.now) is ErrorCode.REBALANCE_IN_PROGRESS
    ta = h.join(a)
    ra, rb = h.joined(ta), h.joined(tb)
    assert ra.generation_id == rb.generation_id == 2
    assert ra.leader == a and len(ra.members) == 2 and rb.members == ()


def test_a_member_that_does_not_rejoin_within_the_rebalance_timeout_is_removed() -> None:
    h = Harness()
    a, b = stable_group(h, 2)
    c = h.new_member()
    tc = h.join(c)
    ta = h.join(a)
    h.groups.heartbeat("g", b, None, 1, h.now)
    h.advance(REBALANCE_MS)
    assert h.joined(tc).generation_id == 2 and h.joined(ta).generation_id == 2
    assert set(h.groups.groups["g"].members) == {a, c}


def test_session_timeout_removes_a_silent_member_and_rebalances() -> None:
    h = Harness()
    a, b = stable_group(h, 2)
    h.advance(SESSION_MS // 2)
    assert h.groups.heartbeat("g", a, None, 1, h.now) is ErrorCode.NONE
    h.advance(SESSION_MS // 2)
    assert b not in h.groups.groups["g"].members
    assert h.groups.heartbeat("g", b, None, 1, h.now) is ErrorCode.UNKNOWN_MEMBER_ID
    assert h.state() is GroupState.PREPARING_REBALANCE
    r = h.joined(h.join(a))
    assert r.generation_id == 2 and r.leader == a


def test_heartbeat_and_commit_errors_in_kafkas_order() -> None:
    h = Harness()
    (a,) = stable_group(h, 1)
    assert h.groups.heartbeat("nope", a, None, 1, h.now) is ErrorCode.UNKNOWN_MEMBER_ID
    assert h.groups.heartbeat("g", "stranger", None, 1, h.now) is ErrorCode.UNKNOWN_MEMBER_ID
    assert h.groups.heartbeat("g", a, None, 0, h.now) is ErrorCode.ILLEGAL_GENERATION
    assert h.groups.validate_commit("g", a, None, 0, h.now) is ErrorCode.ILLEGAL_GENERATION
    assert h.groups.validate_commit("g", "stranger", None, 1, h.now) is ErrorCode.UNKNOWN_MEMBER_ID
    assert h.groups.validate_commit("g", "", None, -1, h.now) is ErrorCode.UNKNOWN_MEMBER_ID
    assert h.groups.validate_commit("g", a, None, 1, h.now) is ErrorCode.NONE
    assert h.groups.validate_commit("fresh", "", None, 5, h.now) is ErrorCode.ILLEGAL_GENERATION
    # A simple consumer (no generation, no member) commits to a group of its own.
    assert h.groups.validate_commit("fresh", "", None, -1, h.now) is ErrorCode.NONE
    assert h.state("fresh") is GroupState.EMPTY


def test_commits_during_completing_rebalance_are_refused() -> None:
    h = Harness()
    a = h.new_member()
    h.joined(h.join_settled(a))
    assert h.groups.validate_commit("g", a, None, 1, h.now) is ErrorCode.REBALANCE_IN_PROGRESS


def test_sync_errors() -> None:
    h = Harness()
    (a,) = stable_group(h, 1)
    assert h.synced(h.sync(a, 7)).error is ErrorCode.ILLEGAL_GENERATION
    assert h.synced(h.sync("x", 1)).error is ErrorCode.UNKNOWN_MEMBER_ID
    assert h.synced(h.sync(a, 1, group="none")).error is ErrorCode.UNKNOWN_MEMBER_ID
    assert h.synced(h.sync(a, 1)).assignment == a.encode()  # Stable: the member's share, again
    b = h.new_member()
    h.join(b)
    assert h.synced(h.sync(a, 1)).error is ErrorCode.REBALANCE_IN_PROGRESS


def test_a_failed_assignment_write_fails_every_sync_and_rebalances() -> None:
    h = Harness()
    a = h.new_member()
    h.joined(h.join_settled(a))
    t = h.sync(a, 1, {a: b"x"})
    h.store_done(ErrorCode.NOT_COORDINATOR)
    assert h.synced(t).error is ErrorCode.NOT_COORDINATOR
    assert h.state() is GroupState.PREPARING_REBALANCE


def test_a_member_that_never_syncs_is_removed_after_the_rebalance_timeout() -> None:
    h = Harness()
    a, b = stable_group(h, 2)
    c = h.new_member()
    tokens = [h.join(m) for m in (a, b, c)]
    results = {r.member_id: r for r in map(h.joined, tokens)}
    gen = results[a].generation_id
    leader = next(r.member_id for r in results.values() if r.members)
    h.sync(leader, gen, {m: b"" for m in (a, b, c)})
    h.store_done()
    for _ in range(REBALANCE_MS // 5000):  # everyone heartbeats, two never sync
        h.advance(5000)
        for m in (a, b, c):
            h.groups.heartbeat("g", m, None, gen, h.now)
    # the two that did not sync are gone; the group rebalances without them
    assert set(h.groups.groups["g"].members) == {leader}
    assert h.state() is GroupState.PREPARING_REBALANCE


def test_leave_group_removes_members_and_an_empty_group_is_written() -> None:
    h = Harness()
    a, b = stable_group(h, 2)
    error, errors = h.groups.leave("g", [(a, None), ("ghost", None)], h.now)
    assert error is ErrorCode.NONE and errors == [ErrorCode.NONE, ErrorCode.UNKNOWN_MEMBER_ID]
    rb = h.joined(h.join(b))
    assert rb.leader == b and rb.generation_id == 2
    h.groups.leave("g", [(b, None)], h.now)
    h.pump()
    assert h.state() is GroupState.EMPTY and h.groups.groups["g"].generation == 3
    value = h.stores[-1].records[0][1]
    assert value is not None and recs.decode_group_value(value).members == ()


def test_static_member_rejoin_replaces_the_old_id_which_is_fenced() -> None:
    h = Harness()
    a = h.new_member()
    ta = h.join_settled(a, instance="i-1")
    r = h.joined(ta)
    h.sync(r.member_id, r.generation_id, {r.member_id: b"p0"}, instance="i-1")
    h.store_done()
    h.replies.clear()
    # The process restarts and joins without its member id: no MEMBER_ID_REQUIRED for a static member.
    r2 = h.joined(h.join("", instance="i-1"))
    assert r2.error is ErrorCode.NONE and r2.member_id != a
    assert h.groups.heartbeat("g", a, "i-1", 1, h.now) is ErrorCode.FENCED_INSTANCE_ID
    assert h.groups.validate_commit("g", a, "i-1", 1, h.now) is ErrorCode.FENCED_INSTANCE_ID
    _error, errors = h.groups.leave("g", [(a, "i-1")], h.now)
    assert errors == [ErrorCode.FENCED_INSTANCE_ID]


def test_static_follower_restart_keeps_its_assignment_without_a_rebalance() -> None:
    h = Harness()
    ids = [h.new_member() for _ in range(2)]
    tokens = [h.join(m, instance=f"i-{n}") for n, m in enumerate(ids)]
    h.settle()
    results = [h.joined(t) for t in tokens]
    leader = next(r for r in results if r.members).member_id
    follower_index = 1 - ids.index(leader)
    for n, m in enumerate(ids):
        h.sync(m, 1, {x: x.encode() for x in ids} if m == leader else None, instance=f"i-{n}")
    h.store_done()
    h.replies.clear()
    r = h.joined(h.join("", instance=f"i-{follower_index}"))
    assert r.generation_id == 1 and h.state() is GroupState.STABLE
    assert h.synced(h.sync(r.member_id, 1, instance=f"i-{follower_index}")).assignment == ids[follower_index].encode()


def test_join_validation() -> None:
    h = Harness(max_size=2, member_metadata_max_bytes=100)
    assert h.joined(h.join(session_ms=1)).error is ErrorCode.INVALID_SESSION_TIMEOUT
    assert h.joined(h.join(group="")).error is ErrorCode.INVALID_GROUP_ID
    assert h.joined(h.join(protocols=(("r", b"x" * 101),))).error is ErrorCode.INVALID_REQUEST
    assert h.joined(h.join(protocols=())).error is ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    assert h.joined(h.join("made-up")).error is ErrorCode.UNKNOWN_MEMBER_ID
    stable_group(h, 1)
    assert h.joined(h.join(protocols=(("other", b""),))).error is ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    assert h.joined(h.join(protocol_type="connect")).error is ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    h.new_member()
    assert h.joined(h.join()).error is ErrorCode.GROUP_MAX_SIZE_REACHED


def test_a_flood_of_fresh_joins_is_bounded_and_unused_ids_expire() -> None:
    h = Harness(max_size=50)
    errors = [h.joined(h.join()).error for _ in range(200)]
    assert errors.count(ErrorCode.MEMBER_ID_REQUIRED) == 50
    assert errors.count(ErrorCode.GROUP_MAX_SIZE_REACHED) == 150
    h.advance(SESSION_MS)
    assert not h.groups.groups["g"].pending
    assert h.joined(h.join()).error is ErrorCode.MEMBER_ID_REQUIRED


def test_protocol_is_chosen_by_vote_among_the_ones_every_member_supports() -> None:
    h = Harness()
    a, b = h.new_member(), h.new_member()
    ta = h.join(a, protocols=(("cooperative-sticky", b"1"), ("range", b"2")))
    tb = h.join(b, protocols=(("range", b"3"), ("cooperative-sticky", b"4")))
    h.settle()
    r = h.joined(ta)
    h.joined(tb)
    assert r.protocol_name in ("cooperative-sticky", "range")
    c = h.new_member()
    assert h.joined(h.join(c, protocols=(("roundrobin", b""),))).error is ErrorCode.INCONSISTENT_GROUP_PROTOCOL


def test_initial_rebalance_delay_waits_for_more_members() -> None:
    h = Harness()
    h.groups = ClassicGroups(GroupLimits(initial_rebalance_delay_ms=3000), random.Random(1))
    a, b = h.new_member(), h.new_member()
    ta = h.join(a)
    h.advance(2000)
    tb = h.join(b)
    h.advance(1000)
    assert ta not in h.replies, "a member arrived during the delay: it is extended"
    h.advance(3000)
    assert h.joined(ta).generation_id == h.joined(tb).generation_id == 1


def test_offsets_are_fetched_deleted_and_expire_after_the_group_is_empty_long_enough() -> None:
    h = Harness()
    assert h.groups.validate_commit("s", "", None, -1, h.now) is ErrorCode.NONE
    h.groups.offsets_committed("s", {("t", 0): recs.OffsetValue(5, 1, "m", h.now), ("t", 1): recs.OffsetValue(7)})
    assert h.groups.committed("s", [("t", 0), ("u", 0)]) == {("t", 0): recs.OffsetValue(5, 1, "m", h.now)}
    error, tombstones = h.groups.delete("s")
    assert error is ErrorCode.NONE and len(tombstones) == 3 and all(v is None for _, v in tombstones)
    assert h.groups.delete("s")[0] is ErrorCode.GROUP_ID_NOT_FOUND
    h.groups.validate_commit("s", "", None, -1, h.now)
    h.groups.offsets_committed("s", {("t", 0): recs.OffsetValue(5, -1, "", h.now)})
    assert h.groups.expire_offsets(h.now + 999, 1000) == []
    writes = h.groups.expire_offsets(h.now + 1000, 1000)
    assert len(writes) == 1 and len(writes[0].records) == 2 and "s" not in h.groups.groups


def test_delete_refuses_a_group_with_members() -> None:
    h = Harness()
    stable_group(h, 1)
    assert h.groups.delete("g")[0] is ErrorCode.NON_EMPTY_GROUP


def test_a_group_loads_back_from_its_records_and_members_must_heartbeat() -> None:
    h = Harness()
    a, b = stable_group(h, 2)
    h.groups.offsets_committed("g", {("t", 0): recs.OffsetValue(9, 2, "", h.now)})
    group_record = h.groups.groups["g"]
    value = recs.GroupValue(
        "consumer",
        group_record.generation,
        "range",
        group_record.leader,
        h.now,
        tuple(
            recs.MemberValue(m.member_id, None, "c", "/h", REBALANCE_MS, SESSION_MS, b"m", m.assignment)
            for m in group_record.members.values()
        ),
    )
    loaded = ClassicGroups(GroupLimits(), random.Random(2))
    loaded.load_group("g", recs.decode_group_value(recs.encode_group_value(value)), h.now)
    loaded.load_offset(recs.OffsetKey("g", "t", 0), recs.OffsetValue(9, 2, "", h.now), h.now)
    loaded.load_offset(recs.OffsetKey("gone", "t", 0), recs.OffsetValue(1), h.now)
    loaded.load_offset(recs.OffsetKey("gone", "t", 0), None, h.now)
    loaded.loaded(h.now)
    assert loaded.groups["g"].state is GroupState.STABLE and set(loaded.groups["g"].members) == {a, b}
    assert loaded.committed("g", None) == {("t", 0): recs.OffsetValue(9, 2, "", h.now)}
    assert loaded.groups["gone"].offsets == {}
    assert loaded.heartbeat("g", a, None, group_record.generation, h.now + 5000) is ErrorCode.NONE
    loaded.tick(h.now + SESSION_MS)
    assert set(loaded.groups["g"].members) == {a}


def test_close_answers_every_waiting_request_not_coordinator() -> None:
    h = Harness()
    (_a,) = stable_group(h, 1)
    b = h.new_member()
    tb = h.join(b)
    h.groups.close()
    h.pump()
    assert h.joined(tb).error is ErrorCode.NOT_COORDINATOR


@pytest.mark.parametrize("topics", [["a"], ["a", "bb", "topic-c"], []])
def test_consumer_subscription_topics(topics: list[str]) -> None:
    body = b"\x00\x01" + len(topics).to_bytes(4, "big")
    for t in topics:
        body += len(t).to_bytes(2, "big") + t.encode()
    body += b"\xff\xff\xff\xff"  # user data: null
    assert consumer_subscription_topics(body) == set(topics)
    assert consumer_subscription_topics(b"\x00") is None
