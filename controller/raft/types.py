"""Raft's durable records: log entries, hard state, cluster configuration and snapshots.

Pure values, used by the core (``node`` and its parts), the wire format (``messages``) and the on-disk log (``wal``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NewType

NodeId = NewType("NodeId", int)  # 1..2**31-1; 0 means "none" (no vote, no known leader)
Term = NewType("Term", int)
Index = NewType("Index", int)  # log position; 0 is the empty log before the first entry

NO_NODE = NodeId(0)
NODE_ID_MAX = 2**31 - 1


class EntryKind(enum.IntEnum):
    NORMAL = 0  # an application command (a metadata record)
    NOOP = 1  # appended by every new leader: commits the entries of earlier terms (Raft paper section 5.4.2)
    CONFIG = 2  # a new cluster configuration (ConfState.encode), in effect once committed


@dataclass(frozen=True, slots=True)
class Entry:
    term: Term
    index: Index
    kind: EntryKind
    data: bytes


@dataclass(frozen=True, slots=True)
class ConfState:
    """Who votes and who only follows. Changed one server at a time (dissertation section 4.1)."""

    voters: frozenset[NodeId]
    learners: frozenset[NodeId] = frozenset()

    def __post_init__(self) -> None:
        assert not (self.voters & self.learners), (self.voters, self.learners)

    @property
    def members(self) -> frozenset[NodeId]:
        return self.voters | self.learners

    def quorum(self) -> int:
        return len(self.voters) // 2 + 1

    def encode(self) -> bytes:
        return (
            b"v:" + ",".join(str(v) for v in sorted(self.voters)).encode()
            + b";l:" + ",".join(str(v) for v in sorted(self.learners)).encode()
        )  # fmt: skip

    @classmethod
    def decode(cls, data: bytes) -> ConfState:
        """Raises ValueError on anything but the output of ``encode``."""
        text = data.decode("ascii")
        voters_part, learners_part = text.split(";")
        if not voters_part.startswith("v:") or not learners_part.startswith("l:"):
            raise ValueError("not a configuration")

        def ids(part: str) -> frozenset[NodeId]:
            out = set()
            for item in filter(None, part[2:].split(",")):
                node = int(item)
                if not 0 < node <= NODE_ID_MAX:
                    raise ValueError(f"node id {node} out of range")
                out.add(NodeId(node))
            return frozenset(out)

        voters, learners = ids(voters_part), ids(learners_part)
        if voters & learners:
            raise ValueError("a node is both voter and learner")
        return cls(voters, learners)


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be on disk before any message that depends on it is sent (term and vote), plus the commit index."""

    term: Term
    vote: NodeId
    commit: Index


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state machine as of ``index`` (every entry up to it applied), with the configuration in effect there."""

    index: Index
    term: Term
    conf: ConfState
    data: bytes
