"""Server-side assignors (KIP-848): every subscribed partition to exactly one subscriber, balanced, sticky."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rafka_shards.groups.assignors import RANGE, UNIFORM, MemberSpec, assign


def spec(*topics: str, **current: set[int]) -> MemberSpec:
    return MemberSpec(frozenset(topics), {t: frozenset(ps) for t, ps in current.items()})


def flat(a: dict[str, dict[str, frozenset[int]]], member: str) -> set[tuple[str, int]]:
    return {(t, p) for t, ps in a[member].items() for p in ps}


def test_range_gives_contiguous_ranges_in_member_order() -> None:
    out = assign(RANGE, {"b": spec("t"), "a": spec("t"), "c": spec("t")}, {"t": 7})
    assert out["a"] == {"t": frozenset({0, 1, 2})}
    assert out["b"] == {"t": frozenset({3, 4})}
    assert out["c"] == {"t": frozenset({5, 6})}


def test_uniform_balances_and_keeps_what_members_own() -> None:
    first = assign(UNIFORM, {"a": spec("t"), "b": spec("t")}, {"t": 6})
    assert sorted(len(flat(first, m)) for m in "ab") == [3, 3]
    members = {m: MemberSpec(frozenset({"t"}), first[m]) for m in "ab"}
    members["c"] = spec("t")
    second = assign(UNIFORM, members, {"t": 6})
    assert sorted(len(flat(second, m)) for m in "abc") == [2, 2, 2]
    assert flat(second, "a") <= flat(first, "a") and flat(second, "b") <= flat(first, "b"), "only moved partitions"


def test_uniform_respects_subscriptions() -> None:
    out = assign(UNIFORM, {"a": spec("x"), "b": spec("x", "y")}, {"x": 2, "y": 4})
    assert all(t == "x" for t in out["a"])
    assert flat(out, "a") | flat(out, "b") == {("x", 0), ("x", 1), *(("y", p) for p in range(4))}


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.sampled_from("abcdefg"), st.sets(st.sampled_from(["t1", "t2", "t3"]), min_size=1), min_size=1),
    st.dictionaries(st.sampled_from(["t1", "t2", "t3", "gone"]), st.integers(1, 12)),
    st.sampled_from([UNIFORM, RANGE]),
)
def test_every_subscribed_partition_goes_to_exactly_one_subscriber(
    subs: dict[str, set[str]], partitions: dict[str, int], name: str
) -> None:
    members = {m: spec(*ts) for m, ts in subs.items()}
    out = assign(name, members, partitions)
    owners: dict[tuple[str, int], str] = {}
    for m in members:
        for tp in flat(out, m):
            assert tp[0] in subs[m] and tp not in owners
            owners[tp] = m
    wanted = {(t, p) for ts in subs.values() for t in ts if t in partitions for p in range(partitions[t])}
    assert set(owners) == wanted
    if name == UNIFORM and len({frozenset(ts) for ts in subs.values()}) == 1:
        counts = [len(flat(out, m)) for m in members]
        assert max(counts) - min(counts) <= 1
