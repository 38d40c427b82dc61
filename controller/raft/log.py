"""The replicated log of one Raft node, as etcd's ``raft_log.go``: the latest snapshot, the entries after it, and how
far they are committed, handed out for applying, and persisted.

Part of the sans-IO core (``node.RaftNode`` owns one); no I/O. It keeps the log's own rules: a committed entry is
never overwritten, the entries follow the snapshot without a gap, and appending at index i drops everything from i
on (a follower's conflicting suffix, paper 5.3). It also answers the up-to-date check of an election (paper 5.4.1)
and the follower's fast back-off hint. What to append and when an index is committed is the node's decision.
"""

from __future__ import annotations

from controller.raft.types import ConfState, Entry, Index, Snapshot, Term


class RaftLog:
    __slots__ = ("_entries", "applied", "committed", "snapshot", "unstable_from", "unstable_snapshot")

    def __init__(self, snapshot: Snapshot, entries: list[Entry], commit: Index) -> None:
        """Start from what the disk holds: the latest snapshot, the entries after it and the persisted commit."""
        self.snapshot = snapshot
        self._entries = list(entries)
        for i, e in enumerate(self._entries):
            assert e.index == snapshot.index + 1 + i, (e.index, snapshot.index, i)
        assert not self._entries or self._entries[0].term >= snapshot.term
        # The persisted commit index can lag what was committed (it is written without fsync), never lead the log.
        assert snapshot.index <= self.last_index
        self.committed = Index(max(snapshot.index, min(commit, self.last_index)))
        self.applied = snapshot.index  # entries after this are handed out for applying, once committed
        self.unstable_from: Index | None = None  # entries from here on are not persisted yet
        self.unstable_snapshot: Snapshot | None = None  # received from the leader, not persisted yet

    @property
    def last_index(self) -> Index:
        return Index(self.snapshot.index + len(self._entries))

    @property
    def last_term(self) -> Term:
        return self._entries[-1].term if self._entries else self.snapshot.term

    def term_at(self, index: int) -> Term | None:
        """The term of the entry at ``index``; None if it is compacted away or beyond the log."""
        if index == self.snapshot.index:
            return self.snapshot.term
        if index < self.snapshot.index or index > self.last_index:
            return None
        return self._entries[index - self.snapshot.index - 1].term

    def entries(self, first: int, last: int) -> list[Entry]:
        """Entries ``first..last`` inclusive; ``first`` must be after the snapshot."""
        assert first > self.snapshot.index, (first, self.snapshot.index)
        base = self.snapshot.index + 1
        return self._entries[first - base : last - base + 1]

    def batch(self, first: Index, count_max: int, bytes_max: int) -> list[Entry]:
        """Entries from ``first`` on to send in one append: at most ``count_max``, and at most ``bytes_max`` of data
        unless the first entry alone is larger."""
        entries: list[Entry] = []
        size = 0
        for e in self.entries(first, min(self.last_index, first + count_max - 1)):
            size += len(e.data)
            if entries and size > bytes_max:
                break
            entries.append(e)
        return entries

    def is_up_to_date(self, last_index: Index, last_term: Term) -> bool:
        """Paper 5.4.1: the candidate's log ends in a later term, or in the same term and is at least as long."""
        return last_term > self.last_term or (last_term == self.last_term and last_index >= self.last_index)

    def truncate_and_append(self, new: list[Entry]) -> None:
        first = new[0].index
        assert first > self.committed, (first, self.committed)  # a committed entry is never overwritten
        assert first <= self.last_index + 1
        del self._entries[first - self.snapshot.index - 1 :]
        self._entries.extend(new)
        self.unstable_from = first if self.unstable_from is None else Index(min(self.unstable_from, first))

    def append_new(self, entries: list[Entry]) -> None:
        """Append the leader's ``entries`` (which follow a matching entry), skipping those we already hold: only
        from the first one that is new or conflicts does our log change."""
        for i, e in enumerate(entries):
            if e.index > self.last_index or self.term_at(e.index) != e.term:
                self.truncate_and_append(entries[i:])
                break

    def conflict_hint(self, prev_index: Index, prev_term: Term) -> Index:
        """Paper 5.3 with the fast back-off: our entries of terms after ``prev_term`` cannot match the leader's, so
        the leader may skip back past them (never past our commit index)."""
        hint = min(prev_index - 1, self.last_index)
        while hint > self.committed and (self.term_at(hint) or 0) > prev_term:
            hint -= 1
        return Index(hint)

    def commit_to(self, index: Index) -> list[Entry]:
        """Advance the commit index; returns the entries newly committed (none if ``index`` is not ahead)."""
        if index <= self.committed:
            return []
        old = self.committed
        self.committed = index
        return self.entries(old + 1, index)

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log by a snapshot received from the leader; it is to be persisted and applied."""
        self.snapshot = snapshot
        self._entries = []
        self.committed = snapshot.index
        self.applied = snapshot.index
        self.unstable_from = None
        self.unstable_snapshot = snapshot

    def compact(self, index: Index, conf: ConfState, data: bytes) -> Snapshot:
        """Make ``data`` (the state machine as of ``index``, already applied) the snapshot and drop what it covers."""
        assert self.snapshot.index < index <= self.applied, (self.snapshot.index, index, self.applied)
        assert self.unstable_from is None or self.unstable_from > index
        term = self.term_at(index)
        assert term is not None
        del self._entries[: index - self.snapshot.index]
        self.snapshot = Snapshot(index, term, conf, data)
        return self.snapshot

    def has_unstable(self) -> bool:
        return self.unstable_from is not None or self.unstable_snapshot is not None

    def take_unstable(self) -> tuple[Snapshot | None, tuple[Entry, ...]]:
        """What to persist now: a received snapshot and the entries not yet handed out for persisting."""
        entries: tuple[Entry, ...] = ()
        if self.unstable_from is not None:
            entries = tuple(self.entries(self.unstable_from, self.last_index))
        snapshot = self.unstable_snapshot
        self.unstable_from = None
        self.unstable_snapshot = None
        return snapshot, entries

    def take_committed(self, count_max: int) -> tuple[Entry, ...]:
        """The next committed entries to apply, at most ``count_max``; they count as applied from now on."""
        last = min(self.committed, self.applied + count_max)
        if last <= self.applied:
            return ()
        committed = tuple(self.entries(self.applied + 1, last))
        self.applied = Index(last)
        return committed
