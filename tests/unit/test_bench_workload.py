"""The perf harness's pure parts: workload files as read and checked, the compaction kind's field checks, and the
arithmetic of the compaction step (segment size, keyed routing, cleaner totals, latencies sent in an interval).
Nothing here starts a broker."""

from __future__ import annotations

import array
from typing import Any

import pytest

from bench import clients, compaction, workload
from bench.clients import Load, Report
from bench.workload import WorkloadError


def _compaction(**fields: Any) -> dict[str, Any]:
    return {"name": "c", "kind": "compaction", "consumers": 0, "rates": [2000], **fields}


def test_every_workload_file_loads() -> None:
    for name in workload.available():
        w = workload.load(name)
        assert w.name == name and w.steps()


def test_the_compaction_workload_is_issue_15s() -> None:
    w = workload.load("compaction")
    assert w.kind == "compaction"
    assert (w.data_mb, w.message_size, w.keys) == (1024, 1024, 100_000)
    assert w.consumers == 0 and all(r > 0 for r in w.rates)
    assert [s.label for s in w.steps()] == ["2000 msg/s"]


def test_keys_defaults_and_is_checked() -> None:
    assert workload.parse(_compaction()).keys == 100_000
    assert workload.parse(_compaction(keys=10)).keys == 10
    for bad in (0, -1, "many", 1.5, True, workload.KEYS_MAX + 1):
        with pytest.raises(WorkloadError, match="keys: expected an integer"):
            workload.parse(_compaction(keys=bad))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"rates": [0]}, "rates: compaction measures latency at fixed rates"),
        ({"rates": [1000, 0]}, "rates: compaction measures latency at fixed rates"),
        ({"consumers": 1}, "consumers: compaction measures produce latency only"),
        ({"kind": "compact"}, "kind: expected one of stream, recovery, limits, compaction"),
    ],
)
def test_a_compaction_workload_that_cannot_compare_is_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(WorkloadError, match=message):
        workload.parse(_compaction(**fields), source="w.toml")


def test_other_kinds_keep_their_rules() -> None:
    assert workload.parse({"name": "s", "rates": [0], "consumers": 2}).kind == "stream"


def test_segment_bytes_leave_closed_segments_whatever_the_fill() -> None:
    mib = 1 << 20
    assert compaction.segment_bytes(1024 * mib) == 64 * mib
    assert compaction.segment_bytes(64 * mib) == 4 * mib
    assert compaction.segment_bytes(2 * mib) == 128 * 1024
    assert compaction.segment_bytes(1000) == 64 * 1024
    configs = compaction.topic_configs(1024 * mib)
    assert configs["cleanup.policy"] == "compact" and configs["segment.bytes"] == str(64 * mib)


def test_the_cleaning_run_first_looks_when_the_window_opens() -> None:
    flags = compaction.cleaner_on(warmup_s=5.0)
    assert flags[:2] == ("--log-cleaner-threads", "1")
    assert int(flags[flags.index("--log-cleaner-backoff-ms") + 1]) == int((compaction.STARTUP_LEAD_S + 5.0) * 1000)


def _load(client_index: int = 0, clients_n: int = 1, keys: int = 0, partitions: int = 4) -> Load:
    return Load(
        "kafka", "a:1", ("t",), partitions, 64, "all", "none", 5, 1, 0.0, 10, 0, 0, 1, 2, client_index, clients_n, keys
    )


def test_keyed_messages_spread_over_the_keys_and_keep_a_partition_per_key() -> None:
    loads = [_load(i, 2, keys=50) for i in range(2)]
    seen: dict[bytes, set[tuple[str, int]]] = {}
    counts: dict[bytes, int] = {}
    for seq in range(2500):
        for load in loads:
            key = clients.key_of(load, seq)
            assert key is not None and key == clients.key_of(load, seq)  # the same in every run
            seen.setdefault(key, set()).add(clients._target(load, seq))
            counts[key] = counts.get(key, 0) + 1
    assert sorted(seen) == [b"key-%09d" % k for k in range(50)]
    assert all(len(where) == 1 for where in seen.values())
    assert min(counts.values()) >= 50 and max(counts.values()) <= 150  # about 100 each, not a cycle's exactly 100
    assert len(set(counts.values())) > 1
    assert clients.key_of(_load(), 3) is None


def test_fill_loads_share_the_count_exactly_flat_out_and_all_measured() -> None:
    base = [_load(i, 3) for i in range(3)]
    fill = compaction.fill_loads(base, count=10, keys=7)
    assert [f.messages_max for f in fill] == [4, 3, 3]
    assert all(f.rate == 0 and f.keys == 7 and f.warm_end_ns == f.start_ns for f in fill)
    assert all(f.end_ns - f.start_ns == int(compaction.FILL_MAX_S * 1e9) and f.deadline_ns > f.end_ns for f in fill)


def test_cleaner_totals_sum_the_shards_that_answered() -> None:
    shards = [
        {"shard": 0, "cleaner": {"passes": 1, "failures": 0, "bytes_read": 300, "bytes_written": 10, "seconds": 2.0}},
        {"shard": 1, "cleaner": None},
        {"shard": 2, "cleaner": {"passes": 2, "failures": 1, "bytes_read": 100, "bytes_written": 5, "seconds": 2.0}},
    ]
    totals = compaction.cleaner_totals(shards)
    assert (totals.passes, totals.failures, totals.bytes_read, totals.bytes_written) == (3, 1, 400, 15)
    assert totals.read_mb_s == pytest.approx(400 / 4.0 / 1e6)
    assert compaction.CleanerTotals().read_mb_s == 0.0


def test_latencies_between_keeps_the_messages_sent_in_the_interval() -> None:
    def report(pairs: list[tuple[int, int]]) -> Report:
        return Report(
            latencies_us=array.array("Q", [lat for lat, _ in pairs]).tobytes(),
            sent_ns=array.array("Q", [t for _, t in pairs]).tobytes(),
        )

    reports = [report([(1, 5), (2, 10), (3, 20)]), report([(4, 15), (5, 25)])]
    assert sorted(compaction.latencies_between(reports, 10, 20)) == [2, 3, 4]
    assert list(compaction.latencies_between(reports, 30, 40)) == []
