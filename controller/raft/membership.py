"""Cluster membership of one Raft node, as etcd's ``confchange`` package: the configuration in effect, what a change
may be, and the removed nodes a leader keeps replicating to until they learn they are out.

Part of the sans-IO core (``node.RaftNode`` owns one); no I/O. Changes go one server at a time (dissertation 4.1),
each in effect once its CONFIG entry is committed (as etcd does, not when appended), at most one in flight; a node
joins as a learner, which replicates but does not vote, and is promoted once it has caught up (4.2.1). The node
checks leadership and the in-flight rule; ``changed_conf`` checks that the change fits the configuration.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from controller.raft.types import ConfState, Entry, EntryKind, Index, NodeId


class ConfChangeOp(enum.Enum):
    ADD_LEARNER = "add_learner"
    PROMOTE = "promote"
    REMOVE = "remove"


class ConfChangeError(ValueError):
    """A membership change that makes no sense for the current configuration."""


def changed_conf(conf: ConfState, op: ConfChangeOp, node: NodeId) -> ConfState:
    """The configuration after ``op`` on ``node``; raises ConfChangeError if it does not apply to ``conf``."""
    if op == ConfChangeOp.ADD_LEARNER:
        if node in conf.members:
            raise ConfChangeError(f"node {node} is already a member")
        return ConfState(conf.voters, conf.learners | {node})
    if op == ConfChangeOp.PROMOTE:
        if node not in conf.learners:
            raise ConfChangeError(f"node {node} is not a learner")
        return ConfState(conf.voters | {node}, conf.learners - {node})
    if node not in conf.members:
        raise ConfChangeError(f"node {node} is not a member")
    if conf.voters == {node}:
        raise ConfChangeError("cannot remove the last voter")
    return ConfState(conf.voters - {node}, conf.learners - {node})


class Membership:
    """The configuration in effect (the last committed one) and its history since the snapshot."""

    __slots__ = ("_history", "conf", "leaving", "pending_index")

    def __init__(self, snapshot_conf: ConfState, committed: list[Entry]) -> None:
        """Start from the snapshot's configuration and replay the committed entries after the snapshot."""
        self.conf = snapshot_conf
        self._history: list[tuple[Index, ConfState]] = []  # committed CONFIG entries after the snapshot
        # The last CONFIG entry a leader appended: no other change may start before it commits.
        self.pending_index = Index(0)
        self.leaving: dict[NodeId, tuple[Index, int]] = {}  # removed node -> (its removal's index, give up at)
        for e in committed:
            if e.kind == EntryKind.CONFIG:
                self.apply(e.index, ConfState.decode(e.data))

    def apply(self, index: Index, conf: ConfState) -> frozenset[NodeId]:
        """The CONFIG entry at ``index`` is committed: ``conf`` is in effect. Returns the members it removed."""
        removed = self.conf.members - conf.members
        self._history.append((index, conf))
        self.conf = conf
        return removed

    def restore(self, conf: ConfState) -> None:
        """A snapshot from the leader replaced the log: its configuration is in effect, with no history after it."""
        self._history = []
        self.conf = conf

    def conf_at(self, index: Index, snapshot_conf: ConfState) -> ConfState:
        """The configuration in effect at ``index`` (committed), ``snapshot_conf`` being the one at the snapshot."""
        conf = snapshot_conf
        for at, c in self._history:
            if at <= index:
                conf = c
        return conf

    def drop_history(self, index: Index) -> None:
        """The log is compacted up to ``index``: its changes are in the new snapshot's configuration."""
        self._history = [(at, c) for at, c in self._history if at > index]

    # ---- removed nodes the leader still replicates to ------------------------------------------------------

    def leave(self, removed: Iterable[NodeId], index: Index, give_up_ms: int) -> None:
        """Keep replicating to ``removed`` until each has the entry at ``index`` that removes it, so it learns that
        it is out and stops campaigning; give up at ``give_up_ms`` (it may be gone for good)."""
        for n in removed:
            self.leaving[n] = (index, give_up_ms)

    def has_learned_removal(self, node: NodeId, match: Index) -> bool:
        leaving = self.leaving.get(node)
        return leaving is not None and match >= leaving[0]

    def overdue(self, now_ms: int) -> list[NodeId]:
        return [n for n, (_, give_up_ms) in self.leaving.items() if now_ms >= give_up_ms]

    def forget_leaving(self, node: NodeId) -> bool:
        """Stop replicating to ``node``; True if it is not a member (again), so its progress can go."""
        del self.leaving[node]
        return node not in self.conf.members

    def clear_leaving(self) -> None:
        self.leaving = {}
