"""Linearizable reads without a log entry: ReadIndex (dissertation 6.4), as etcd's ``read_only.go``.

Part of the sans-IO core (``node.RaftNode`` owns one, and uses it only while it leads); no I/O. A read notes the
leader's commit index of the moment it arrives and the sequence number of a new heartbeat round; once a quorum of
voters has echoed that sequence (or a later one) the leader knows it was still the leader then, and the read is
released as a ``ReadState``: linearizable once the state machine has applied that index. A new leader holds reads
back until it has committed an entry of its own term, because until then its commit index may be behind.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.raft.types import Index


@dataclass(frozen=True, slots=True)
class ReadState:
    """A read asked with ``ctx`` is linearizable once the state machine has applied ``index``."""

    ctx: int
    index: Index


@dataclass(slots=True)
class _PendingRead:
    seq: int
    ctx: int
    index: Index


class ReadOnly:
    """Reads waiting for confirmation, in the order they arrived (so in the order of their sequence numbers)."""

    __slots__ = ("_pending", "_waiting_commit", "seq")

    def __init__(self) -> None:
        self.seq = 0  # of the latest heartbeat round that confirms reads; sent in every Append
        self._pending: list[_PendingRead] = []
        self._waiting_commit: list[int] = []  # ctx of reads that came before this leader committed in its term

    def __len__(self) -> int:
        return len(self._pending) + len(self._waiting_commit)

    def reset(self) -> None:
        """No longer the leader: the reads in progress are dropped; no ReadState will come for them."""
        self._pending = []
        self._waiting_commit = []

    def wait_for_commit(self, ctx: int) -> None:
        self._waiting_commit.append(ctx)

    def take_waiting_for_commit(self) -> list[int]:
        waiting, self._waiting_commit = self._waiting_commit, []
        return waiting

    def has_waiting_for_commit(self) -> bool:
        return bool(self._waiting_commit)

    def has_pending(self) -> bool:
        return bool(self._pending)

    def add(self, ctx: int, commit: Index) -> None:
        """A read to confirm by a new heartbeat round (the caller sends it, carrying ``seq``)."""
        self.seq += 1
        self._pending.append(_PendingRead(self.seq, ctx, commit))

    def release(self, confirmed_seq: int) -> list[ReadState]:
        """The reads whose heartbeat round a quorum confirmed: ``confirmed_seq`` or an earlier one."""
        released = []
        while self._pending and self._pending[0].seq <= confirmed_seq:
            read = self._pending.pop(0)
            released.append(ReadState(read.ctx, read.index))
        return released
