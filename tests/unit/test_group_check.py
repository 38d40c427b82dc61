"""The verifier's consumer-group checks (bench.chaos.group_check) on hand-made histories."""

from __future__ import annotations

from dataclasses import dataclass

from bench.chaos.group_check import GroupCommit, GroupRead, check_group


@dataclass(frozen=True)
class Log:
    log_start_offset: int
    high_watermark: int


@dataclass(frozen=True)
class Acked:
    partition: int
    offset: int


def reads(partition: int, offsets: range, member: str = "0.0") -> list[GroupRead]:
    return [GroupRead(partition, o, member, 1.0) for o in offsets]


def test_a_clean_history_passes() -> None:
    commits = [GroupCommit(0, 5, "0.0", 1.0, 1.1), GroupCommit(0, 10, "1.0", 2.0, 2.1)]
    f = check_group(reads(0, range(10)), commits, {0: 10}, {0: Log(0, 10)}, [Acked(0, o) for o in range(10)])
    assert f.passed and f.commits == 2 and f.members == 2


def test_an_acknowledged_commit_above_the_final_one_was_lost() -> None:
    f = check_group(reads(0, range(10)), [GroupCommit(0, 10, "0.0", 1.0, 1.1)], {0: 7}, {0: Log(0, 10)}, [])
    assert f.commits_lost == 1 and not f.passed


def test_a_commit_sent_after_a_higher_one_was_acknowledged_goes_backwards() -> None:
    commits = [GroupCommit(0, 10, "0.0", 1.0, 1.1), GroupCommit(0, 6, "1.0", 1.2, 1.3)]
    f = check_group(reads(0, range(10)), commits, {0: 10}, {0: Log(0, 10)}, [])
    assert f.commits_backwards == 1
    concurrent = [GroupCommit(0, 10, "0.0", 1.0, 1.3), GroupCommit(0, 6, "1.0", 1.2, 1.25)]  # in flight together
    assert check_group(reads(0, range(10)), concurrent, {0: 10}, {0: Log(0, 10)}, []).commits_backwards == 0


def test_a_record_below_the_committed_offset_that_nobody_read_was_skipped() -> None:
    f = check_group(reads(0, range(4)) + reads(0, range(5, 10)), [], {0: 10}, {0: Log(0, 10)}, [])
    assert f.skipped == 1 and "p0@4" in f.examples["group_skipped"][0]


def test_an_acknowledged_record_never_read_is_unconsumed() -> None:
    f = check_group(reads(0, range(3)), [], {0: 3}, {0: Log(0, 5)}, [Acked(0, o) for o in range(5)])
    assert f.unconsumed == 2 and f.skipped == 0
