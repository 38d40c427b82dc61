"""The consumer group's checks of a chaos run (sans-IO: parsed histories in, findings out).

Inputs: every record the group's members read, every commit the broker acknowledged to them (with when it was sent
and acknowledged), the group's committed offsets after the run (from the coordinator, after healing and draining),
and the final log of every partition. Checks (issue 16):

- **group_commits_lost**: an acknowledged commit above the final committed offset of its partition: a commit the
  coordinator acknowledged and then lost or rolled back;
- **group_commits_backwards**: a commit acknowledged at an offset below one acknowledged before it was sent
  (a new owner started behind what the group had committed);
- **group_skipped**: a record of the final log below the group's final committed offset that no member read
  (a member committed past it without it being read by anyone);
- **group_unconsumed**: an acknowledged record the group never read, although the run drained the group to the end
  of the log (at least once delivery); ``acked`` are the producers' acknowledgements.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from bench.chaos.checker import keep_example


@dataclass(frozen=True, slots=True)
class GroupRead:
    partition: int
    offset: int
    member: str
    read_s: float


@dataclass(frozen=True, slots=True)
class GroupCommit:
    partition: int
    offset: int
    member: str
    sent_s: float
    acked_s: float


class _FinalLog(Protocol):
    @property
    def log_start_offset(self) -> int: ...

    @property
    def high_watermark(self) -> int: ...


class _Acked(Protocol):
    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...


@dataclass
class GroupFindings:
    reads: int = 0
    commits: int = 0
    commits_lost: int = 0
    commits_backwards: int = 0
    skipped: int = 0
    unconsumed: int = 0
    members: int = 0  # member incarnations seen (each SIGKILL starts a new one)
    final_committed: dict[int, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def example(self, check: str, text: str) -> None:
        keep_example(self.examples, check, text)

    @property
    def passed(self) -> bool:
        return not (self.commits_lost or self.commits_backwards or self.skipped or self.unconsumed)


def check_group(
    reads: Sequence[GroupRead],
    commits: Sequence[GroupCommit],
    final_committed: Mapping[int, int],
    final: Mapping[int, _FinalLog],
    acked: Iterable[_Acked],
) -> GroupFindings:
    f = GroupFindings(reads=len(reads), commits=len(commits), final_committed=dict(final_committed))
    f.members = len({r.member for r in reads} | {c.member for c in commits})
    _check_lost(f, commits, final_committed)
    _check_backwards(f, commits)
    read = {(r.partition, r.offset) for r in reads}
    for p, fp in sorted(final.items()):
        committed = final_committed.get(p, -1)
        for o in range(fp.log_start_offset, min(committed, fp.high_watermark)):
            if (p, o) not in read:
                f.skipped += 1
                f.example("group_skipped", f"p{p}@{o} is below the committed offset {committed} and was never read")
    for a in acked:
        if (a.partition, a.offset) not in read:
            f.unconsumed += 1
            f.example("group_unconsumed", f"acknowledged p{a.partition}@{a.offset} was never read by the group")
    return f


def _check_lost(f: GroupFindings, commits: Sequence[GroupCommit], final_committed: Mapping[int, int]) -> None:
    for c in commits:
        if c.offset > final_committed.get(c.partition, -1):
            f.commits_lost += 1
            f.example(
                "group_commits_lost",
                f"p{c.partition}: {c.member} had offset {c.offset} acknowledged at {c.acked_s:.3f}; "
                f"the group's committed offset is {final_committed.get(c.partition)}",
            )


def _check_backwards(f: GroupFindings, commits: Sequence[GroupCommit]) -> None:
    """For each commit B: every commit A acknowledged before B was sent must have an offset <= B's."""
    by_partition: dict[int, list[GroupCommit]] = {}
    for c in commits:
        by_partition.setdefault(c.partition, []).append(c)
    for p, cs in sorted(by_partition.items()):
        acked_order = sorted(cs, key=lambda c: c.acked_s)
        i = 0
        highest: GroupCommit | None = None
        for b in sorted(cs, key=lambda c: c.sent_s):
            while i < len(acked_order) and acked_order[i].acked_s < b.sent_s:
                if highest is None or acked_order[i].offset > highest.offset:
                    highest = acked_order[i]
                i += 1
            if highest is not None and b.offset < highest.offset:
                f.commits_backwards += 1
                f.example(
                    "group_commits_backwards",
                    f"p{p}: {b.member} committed {b.offset} (sent {b.sent_s:.3f}) after {highest.member}'s "
                    f"{highest.offset} was acknowledged ({highest.acked_s:.3f})",
                )
