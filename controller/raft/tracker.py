"""What a leader or candidate knows of its peers, as etcd's ``tracker`` package: per-peer replication ``Progress``
with its flow-control state and inflight bound, the votes of an election and their tally, and the quorum
computations over the voters (the highest index a quorum stores for the commit rule of paper 5.4.2, the read
sequence a quorum confirmed for ReadIndex, dissertation 6.4, and check-quorum activity, dissertation 6.2).

Part of the sans-IO core (``node.RaftNode`` owns one); no I/O. The voters come from the configuration in effect,
passed in by the node.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from controller.raft.types import ConfState, Index, NodeId


class PeerState(enum.Enum):
    PROBE = "probe"  # one append in flight until we learn where the logs match
    REPLICATE = "replicate"  # appends pipelined, next advanced optimistically
    SNAPSHOT = "snapshot"  # an InstallSnapshot is in flight


@dataclass(slots=True)
class Progress:
    """The leader's view of one follower."""

    next: Index
    match: Index = Index(0)  # noqa: RUF009 - NewType of int: no call at runtime worth avoiding
    state: PeerState = PeerState.PROBE
    probe_sent: bool = False
    snapshot_sent_ms: int = 0
    read_seq: int = 0
    active: bool = False  # heard from since the last quorum check

    def inflight_full(self, inflight_entries_max: int) -> bool:
        """Entries sent and not yet acknowledged reach the bound: send no more until some are."""
        return self.next - self.match - 1 >= inflight_entries_max

    def become_replicate(self, acked: Index) -> None:
        """The follower stores everything up to ``acked``: pipeline from there."""
        self.next = Index(max(self.next, acked + 1))
        self.state = PeerState.REPLICATE
        self.probe_sent = False

    def become_probe(self, next_index: Index) -> None:
        """The follower refused an append: look for where the logs match, one append at a time."""
        self.next = next_index
        self.state = PeerState.PROBE
        self.probe_sent = False


class ProgressTracker:
    """The peers of one node: ``progress`` while it leads, ``votes`` while it campaigns."""

    __slots__ = ("_id", "progress", "votes")

    def __init__(self, node_id: NodeId) -> None:
        self._id = node_id
        self.progress: dict[NodeId, Progress] = {}
        self.votes: dict[NodeId, bool] = {}

    def clear(self) -> None:
        self.progress = {}
        self.votes = {}

    def start_leading(self, members: frozenset[NodeId], next_index: Index) -> None:
        self.votes = {}
        self.progress = {n: Progress(next=next_index) for n in members - {self._id}}

    def track(self, nodes: Iterable[NodeId], next_index: Index) -> None:
        for n in nodes:
            self.progress[n] = Progress(next=next_index)

    def untrack(self, nodes: Iterable[NodeId]) -> None:
        for n in nodes:
            self.progress.pop(n, None)

    # ---- elections -----------------------------------------------------------------------------------------

    def start_election(self) -> None:
        self.votes = {self._id: True}

    def record_vote(self, node: NodeId, granted: bool) -> None:
        self.votes[node] = granted

    def tally(self, conf: ConfState) -> int:
        """1 when a quorum of voters granted, -1 when a quorum refused, 0 while undecided."""
        granted = sum(1 for n, v in self.votes.items() if v and n in conf.voters)
        refused = sum(1 for n, v in self.votes.items() if not v and n in conf.voters)
        quorum = conf.quorum()
        return 1 if granted >= quorum else -1 if refused >= quorum else 0

    # ---- quorums -------------------------------------------------------------------------------------------

    def quorum_active(self, conf: ConfState) -> bool:
        """A quorum of voters (this node counting if it votes) was heard from since the last check."""
        active = 1 if self._id in conf.voters else 0
        active += sum(1 for n, pr in self.progress.items() if pr.active and n in conf.voters)
        return active >= conf.quorum()

    def reset_active(self) -> None:
        for pr in self.progress.values():
            pr.active = False

    def quorum_match(self, conf: ConfState, own_last_index: Index) -> Index:
        """The highest index stored on a quorum of voters, this leader's log counting as ``own_last_index``."""
        matches = sorted(
            (own_last_index if n == self._id else self.progress[n].match for n in conf.voters), reverse=True
        )
        return matches[conf.quorum() - 1]

    def quorum_read_seq(self, conf: ConfState, own_read_seq: int) -> int:
        """The highest heartbeat-round sequence a quorum of voters has echoed (this leader at ``own_read_seq``)."""
        seqs = sorted((own_read_seq if n == self._id else self.progress[n].read_seq for n in conf.voters), reverse=True)
        return seqs[conf.quorum() - 1]
