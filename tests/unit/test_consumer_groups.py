"""The consumer group protocol (KIP-848) on the coordinator: rafka_shards.groups.consumer through ClassicGroups,
driven with a fake clock. Checks Kafka's rules: epochs, revoke-before-assign reconciliation, fencing, leaving,
session and revocation timeouts, and the kinds of group (classic / consumer) sharing one id space."""

from __future__ import annotations

import random
import re
import uuid

from rafka_shards.groups import consumer_records
from rafka_shards.groups.classic import ClassicGroups, GroupLimits, JoinRequest
from rafka_shards.groups.consumer import (
    REGEX_MATCHES_MAX,
    ConsumerLimits,
    HeartbeatRequest,
    HeartbeatResult,
    MemberState,
    RegexMatches,
)
from rafka_shards.model import ErrorCode

TOPICS = {"t": 6}
TOPIC_IDS = {"t": uuid.UUID(int=77)}
SESSION_MS = 10_000
WRITTEN: list[tuple[bytes, bytes | None]] = []  # the records the heartbeats asked to write, in order


def groups() -> ClassicGroups:
    limits = ConsumerLimits(session_timeout_ms=SESSION_MS, heartbeat_interval_ms=1000)
    return ClassicGroups(GroupLimits(), random.Random(1), limits)


def hb(
    g: ClassicGroups,
    member: str,
    epoch: int,
    owned: dict[str, frozenset[int]] | None = None,
    now: int = 0,
    subscribed: tuple[str, ...] | None = ("t",),
    group: str = "g",
    regex: str | None = None,
) -> HeartbeatResult:
    req = HeartbeatRequest(group, member, epoch, None, None, 30_000, subscribed, regex, None, owned, "c", "/h", 1)
    g.topic_ids = TOPIC_IDS
    result, records = g.consumer_heartbeat(req, TOPICS, now)
    WRITTEN.extend(records)
    return result


def parts(result: HeartbeatResult) -> set[int]:
    assert result.assignment is not None
    return set(result.assignment.get("t", frozenset()))


def test_a_lone_member_gets_every_partition_at_epoch_one() -> None:
    g = groups()
    r = hb(g, "a", 0, {})
    assert r.error is ErrorCode.NONE and r.member_epoch == 1 and parts(r) == set(range(6))
    assert r.heartbeat_interval_ms == 1000
    again = hb(g, "a", 1, {"t": frozenset(range(6))}, subscribed=None)
    assert again.member_epoch == 1 and again.assignment is None, "nothing changed: no assignment sent"


def test_a_second_member_gets_partitions_only_after_the_first_revokes_them() -> None:
    g = groups()
    hb(g, "a", 0, {})
    rb = hb(g, "b", 0, {})
    assert rb.member_epoch == 2 and parts(rb) == set(), "b's target is held by a until a revokes"
    ra = hb(g, "a", 1, {"t": frozenset(range(6))}, subscribed=None)
    keep = parts(ra)
    assert len(keep) == 3 and ra.member_epoch == 1, "a first gives up half, at its old epoch"
    state = g.consumer_group("g")
    assert state is not None and state.members["a"].state is MemberState.UNREVOKED_PARTITIONS
    ra2 = hb(g, "a", 1, {"t": frozenset(keep)}, subscribed=None)
    assert ra2.member_epoch == 2
    rb2 = hb(g, "b", 2, {}, subscribed=None)
    assert parts(rb2) == set(range(6)) - keep and rb2.member_epoch == 2
    assert state.state_name == "Stable"


def test_stale_epochs_are_fenced_and_unknown_members_refused() -> None:
    g = groups()
    hb(g, "a", 0, {})
    assert hb(g, "a", 7, None, subscribed=None).error is ErrorCode.FENCED_MEMBER_EPOCH
    assert hb(g, "x", 1, None, subscribed=None).error is ErrorCode.UNKNOWN_MEMBER_ID
    assert hb(g, "a", 0, {"t": frozenset({1})}).error is ErrorCode.INVALID_REQUEST
    assert hb(g, "a", 0, {}, subscribed=()).error is ErrorCode.INVALID_REQUEST
    assert hb(g, "", 0, {}).error is ErrorCode.INVALID_REQUEST, "v1: the client names itself"


def test_leaving_and_session_expiry_move_partitions_to_the_others() -> None:
    g = groups()
    hb(g, "a", 0, {})
    hb(g, "b", 0, {})
    hb(g, "a", 1, {"t": frozenset(range(6))}, subscribed=None)
    left = hb(g, "a", -1, None, subscribed=None)
    assert left.error is ErrorCode.NONE and left.member_epoch == -1
    rb = hb(g, "b", 2, {}, subscribed=None)
    assert parts(rb) == set(range(6))
    hb(g, "c", 0, {}, now=1000)
    g.tick(SESSION_MS)  # b last heartbeat at 0: gone; c at 1000: still in
    state = g.consumer_group("g")
    assert state is not None and set(state.members) == {"c"}


def test_commits_are_checked_against_member_epochs() -> None:
    g = groups()
    hb(g, "a", 0, {})
    assert g.validate_commit("g", "a", None, 1, 0) is ErrorCode.NONE
    assert g.validate_commit("g", "a", None, 0, 0) is ErrorCode.STALE_MEMBER_EPOCH
    assert g.validate_commit("g", "a", None, 2, 0) is ErrorCode.FENCED_MEMBER_EPOCH
    assert g.validate_commit("g", "z", None, 1, 0) is ErrorCode.UNKNOWN_MEMBER_ID
    assert g.validate_commit("g", "", None, -1, 0) is ErrorCode.UNKNOWN_MEMBER_ID, "not while it has members"


def test_a_group_id_is_either_classic_or_consumer() -> None:
    g = groups()
    hb(g, "a", 0, {})
    classic = JoinRequest("g", "", None, "consumer", (("range", b""),), 10_000, 30_000, "c", "/h", True)
    g.join(classic, 1, 0)
    (reply,) = g.drain()
    assert reply.result.error is ErrorCode.INCONSISTENT_GROUP_PROTOCOL  # type: ignore[union-attr]
    assert g.describe("g").group_type == "consumer" and g.describe("g").state == "Stable"
    hb(g, "a", -1, None, subscribed=None)
    g.join(classic, 2, 0)  # empty now: it becomes a classic group again
    (reply,) = g.drain()
    assert reply.result.error is ErrorCode.MEMBER_ID_REQUIRED  # type: ignore[union-attr]
    assert hb(g, "b", 0, {}).error is ErrorCode.GROUP_ID_NOT_FOUND, "a classic member is joining: a classic group"


def test_the_records_written_load_the_same_group_on_a_new_coordinator() -> None:
    WRITTEN.clear()
    g = groups()
    hb(g, "a", 0, {})
    hb(g, "b", 0, {})
    ra = hb(g, "a", 1, {"t": frozenset(range(6))}, subscribed=None)
    hb(g, "a", 1, {"t": frozenset(parts(ra))}, subscribed=None)
    hb(g, "b", 2, {}, subscribed=None)
    names = {v: k for k, v in TOPIC_IDS.items()}
    loaded = groups()
    for key, value in WRITTEN:
        rec = consumer_records.decode(key, value, names)
        assert rec is not None
        loaded.load_consumer(rec, 5)
    loaded.loaded(5)
    before, after = g.consumer_group("g"), loaded.consumer_group("g")
    assert before is not None and after is not None
    assert (after.group_epoch, after.assignment_epoch, after.target) == (
        before.group_epoch,
        before.assignment_epoch,
        before.target,
    )
    for mid, m in before.members.items():
        n = after.members[mid]
        assert (n.member_epoch, n.previous_epoch, n.state, n.assigned, n.revoking, n.subscribed) == (
            m.member_epoch,
            m.previous_epoch,
            m.state,
            m.assigned,
            m.revoking,
            m.subscribed,
        )
    # The members carry on with the new coordinator without a rebalance.
    assert (
        loaded.consumer_heartbeat(
            HeartbeatRequest("g", "b", 2, None, None, -1, None, None, None, None, "c", "/h", 1), TOPICS, 6
        )[0].error
        is ErrorCode.NONE
    )
    assert after.group_epoch == before.group_epoch
    hb(g, "a", -1, None, subscribed=None)
    leave = [consumer_records.decode(k, v, names) for k, v in WRITTEN[-4:]]
    assert [(r.kind, r.value is None) for r in leave if r is not None][:3] == [(8, True), (7, True), (5, True)]


def test_a_regex_subscription_follows_the_topics_that_match() -> None:
    g = groups()
    topics = {"orders-eu": 2, "orders-us": 2, "payments": 2, "__consumer_offsets": 50}
    req = HeartbeatRequest("g", "a", 0, None, None, 30_000, (), "orders-.*", None, {}, "c", "/h", 1)
    g.topic_ids = {t: uuid.UUID(int=i + 1) for i, t in enumerate(topics)}
    result, _ = g.consumer_heartbeat(req, topics, 0)
    assert result.assignment == {"orders-eu": frozenset({0, 1}), "orders-us": frozenset({0, 1})}
    more = {**topics, "orders-asia": 1}
    follow = HeartbeatRequest("g", "a", 1, None, None, -1, None, None, None, dict(result.assignment), "c", "/h", 1)
    g.topic_ids = {t: uuid.UUID(int=i + 1) for i, t in enumerate(more)}
    again, _ = g.consumer_heartbeat(follow, more, 10)
    assert again.member_epoch == 2 and again.assignment is not None and "orders-asia" in again.assignment
    bad = HeartbeatRequest("g", "b", 0, None, None, 30_000, (), "orders-(", None, {}, "c", "/h", 1)
    assert g.consumer_heartbeat(bad, more, 10)[0].error is ErrorCode.INVALID_REGULAR_EXPRESSION


def test_regex_matches_are_remembered_per_topics_mapping_and_bounded() -> None:
    class Counting(dict[str, int]):
        walks = 0

        def __iter__(self):  # type: ignore[no-untyped-def]
            Counting.walks += 1
            return super().__iter__()

    topics = Counting({"orders-eu": 2, "payments": 1, "__consumer_offsets": 50})
    matches = RegexMatches()
    pattern = re.compile("orders-.*|__consumer_offsets")
    first = matches.matching("orders-.*|__consumer_offsets", pattern, topics)
    assert first == {"orders-eu"}  # internal topics never match
    for _ in range(5):  # the same image: no new walk over the topic names
        assert matches.matching("orders-.*|__consumer_offsets", pattern, topics) is first
    assert Counting.walks == 1
    newer = Counting({**topics, "orders-us": 3})  # a new image: matched again
    assert matches.matching("orders-.*|__consumer_offsets", pattern, newer) == {"orders-eu", "orders-us"}
    assert Counting.walks == 2
    for i in range(REGEX_MATCHES_MAX + 5):
        matches.matching(f"x{i}", re.compile(f"x{i}"), newer)
    assert len(matches._found) <= REGEX_MATCHES_MAX
