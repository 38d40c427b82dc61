"""The Raft state machine of one controller node (sans-IO, in the style of etcd's raft.go).

Runs in the controller's process, driven by a thin shell (``rafka_shards/controller_node/raft_controller.py``) or by the
deterministic simulation in the tests. Inputs: ``step(message)``, ``tick(now_ms)``, ``propose``,
``propose_conf_change``, ``transfer_leadership``, ``read_index``, ``compact``. Output: ``ready()``, which the caller
must handle in order: persist ``hard_state``, ``snapshot`` and ``entries`` (fsync when ``must_sync``), THEN send
``messages``, THEN apply ``snapshot`` and ``committed``. Nothing here sleeps, reads a clock or draws randomness
except from the injected ``random.Random``.

What it implements, with the paper (Ongaro & Ousterhout 2014) or dissertation (Ongaro 2014) section:
- leader election with randomized timeouts (paper 5.2), the up-to-date check (5.4.1), pre-vote (dissertation 9.6)
  and check-quorum with the leader lease that lets voters ignore disruptive candidates (dissertation 4.2.3, 6.2);
- log replication with the consistency check and fast back-off (5.3), and the commit rule that only counts
  replicas of entries of the leader's own term (5.4.2), made prompt by a no-op entry at the start of each term;
- snapshots and InstallSnapshot (paper 7);
- membership changes one server at a time, in effect once committed, at most one in flight, learners catch up
  before they vote (dissertation 4.1, 4.2.1), as etcd does;
- leadership transfer with TimeoutNow (dissertation 3.10);
- linearizable reads with ReadIndex, confirmed by a heartbeat round (dissertation 6.4).
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field

from controller.raft.messages import (
    ENTRIES_PER_MESSAGE_MAX,
    Append,
    AppendResp,
    InstallSnapshot,
    Message,
    PreVote,
    PreVoteResp,
    TimeoutNow,
    Vote,
    VoteResp,
)
from controller.raft.types import NO_NODE, ConfState, Entry, EntryKind, HardState, Index, NodeId, Snapshot, Term


@dataclass(frozen=True, slots=True)
class RaftConfig:
    node_id: NodeId
    election_timeout_ms: int = 1000  # a follower campaigns after [1, 2) x this without a leader
    heartbeat_interval_ms: int = 100
    entries_per_append_max: int = 512
    append_bytes_max: int = 1024 * 1024
    inflight_entries_max: int = 8192  # entries sent to one follower and not yet acknowledged
    uncommitted_entries_max: int = 16384  # proposals beyond this are refused, not queued
    pending_reads_max: int = 4096
    committed_per_ready_max: int = 4096

    def __post_init__(self) -> None:
        assert self.node_id > 0
        assert 0 < self.heartbeat_interval_ms < self.election_timeout_ms
        assert 0 < self.entries_per_append_max <= ENTRIES_PER_MESSAGE_MAX


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre_candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class ConfChangeOp(enum.Enum):
    ADD_LEARNER = "add_learner"
    PROMOTE = "promote"
    REMOVE = "remove"


class NotLeader(Exception):
    def __init__(self, leader: NodeId) -> None:
        super().__init__(f"not the leader (leader: {leader or 'unknown'})")
        self.leader = leader


class ProposalDropped(Exception):
    """The leader cannot take this now (transfer in progress, too much uncommitted, a change in flight): retry."""


class ConfChangeError(ValueError):
    """A membership change that makes no sense for the current configuration."""


@dataclass(frozen=True, slots=True)
class ReadState:
    """A read asked with ``ctx`` is linearizable once the state machine has applied ``index``."""

    ctx: int
    index: Index


@dataclass(frozen=True, slots=True)
class Ready:
    hard_state: HardState | None  # changed since the last Ready
    must_sync: bool  # term, vote, entries or a snapshot changed: fsync before sending
    snapshot: Snapshot | None  # received from the leader: persist it, drop the log it covers, restore from it
    entries: tuple[Entry, ...]  # persist from entries[0].index, discarding anything after that on disk
    messages: tuple[Message, ...]
    committed: tuple[Entry, ...]  # apply in order, after persisting
    read_states: tuple[ReadState, ...]


class _PeerState(enum.Enum):
    PROBE = "probe"  # one append in flight until we learn where the logs match
    REPLICATE = "replicate"  # appends pipelined, next advanced optimistically
    SNAPSHOT = "snapshot"  # an InstallSnapshot is in flight


@dataclass(slots=True)
class Progress:
    """The leader's view of one follower."""

    next: Index
    match: Index = Index(0)  # noqa: RUF009 - NewType of int: no call at runtime worth avoiding
    state: _PeerState = _PeerState.PROBE
    probe_sent: bool = False
    snapshot_sent_ms: int = 0
    read_seq: int = 0
    active: bool = False  # heard from since the last quorum check


@dataclass(frozen=True, slots=True)
class PeerStatus:
    node: NodeId
    match: Index
    next: Index
    state: str


@dataclass(frozen=True, slots=True)
class Status:
    node: NodeId
    role: Role
    term: Term
    leader: NodeId
    commit: Index
    applied: Index
    last_index: Index
    snapshot_index: Index
    conf: ConfState
    peers: tuple[PeerStatus, ...]  # leader only


@dataclass(slots=True)
class _PendingRead:
    seq: int
    ctx: int
    index: Index


@dataclass(slots=True)
class _Outbox:
    messages: list[Message] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)


class RaftNode:
    def __init__(
        self,
        config: RaftConfig,
        rng: random.Random,
        now_ms: int,
        hard_state: HardState,
        snapshot: Snapshot,
        entries: list[Entry],
    ) -> None:
        """Start from what the disk holds: the hard state, the latest snapshot and the log entries after it."""
        self.id = config.node_id
        self._cfg = config
        self._rng = rng
        self._now = now_ms
        self.term = hard_state.term
        self.vote = hard_state.vote
        self._snapshot = snapshot
        self._entries = list(entries)
        for i, e in enumerate(self._entries):
            assert e.index == snapshot.index + 1 + i, (e.index, snapshot.index, i)
        assert not self._entries or self._entries[0].term >= snapshot.term
        # The persisted commit index can lag what was committed (it is written without fsync), never lead the log.
        assert snapshot.index <= self.last_index
        self.commit = Index(max(snapshot.index, min(hard_state.commit, self.last_index)))
        self.applied = snapshot.index  # entries after this are handed out for applying, once committed
        self.conf = snapshot.conf
        self._conf_changes: list[tuple[Index, ConfState]] = []  # committed CONFIG entries after the snapshot
        for e in self._entries:
            if e.index > self.commit:
                break
            if e.kind == EntryKind.CONFIG:
                self._conf_changes.append((e.index, ConfState.decode(e.data)))
                self.conf = self._conf_changes[-1][1]
        self.role = Role.FOLLOWER
        self.leader = NO_NODE
        self._leader_contact_ms = -(10**12)
        self._election_due_ms = 0
        self._reset_election_timer()
        self._votes: dict[NodeId, bool] = {}
        self._progress: dict[NodeId, Progress] = {}
        self._heartbeat_due_ms = 0
        self._quorum_check_due_ms = 0
        self._pending_conf_index = Index(0)
        self._transferee = NO_NODE
        self._transfer_deadline_ms = 0
        self._leaving: dict[NodeId, tuple[Index, int]] = {}  # removed node -> (its removal's index, give up at)
        self._read_seq = 0
        self._pending_reads: list[_PendingRead] = []
        self._reads_waiting_commit: list[int] = []
        self._broadcast_due = False
        # Outputs not yet handed out by ready().
        self._out = _Outbox()
        self._persisted = hard_state
        self._unstable_from: Index | None = None
        self._received_snapshot: Snapshot | None = None

    # ---- the log -------------------------------------------------------------------------------------------

    @property
    def last_index(self) -> Index:
        return Index(self._snapshot.index + len(self._entries))

    @property
    def last_term(self) -> Term:
        return self._entries[-1].term if self._entries else self._snapshot.term

    def term_at(self, index: int) -> Term | None:
        """The term of the entry at ``index``; None if it is compacted away or beyond the log."""
        if index == self._snapshot.index:
            return self._snapshot.term
        if index < self._snapshot.index or index > self.last_index:
            return None
        return self._entries[index - self._snapshot.index - 1].term

    def entries(self, first: int, last: int) -> list[Entry]:
        """Entries ``first..last`` inclusive; ``first`` must be after the snapshot."""
        assert first > self._snapshot.index, (first, self._snapshot.index)
        base = self._snapshot.index + 1
        return self._entries[first - base : last - base + 1]

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def _truncate_and_append(self, new: list[Entry]) -> None:
        first = new[0].index
        assert first > self.commit, (first, self.commit)  # a committed entry is never overwritten
        assert first <= self.last_index + 1
        del self._entries[first - self._snapshot.index - 1 :]
        self._entries.extend(new)
        self._unstable_from = first if self._unstable_from is None else Index(min(self._unstable_from, first))

    def _log_up_to_date(self, last_index: Index, last_term: Term) -> bool:
        """Paper 5.4.1: the candidate's log ends in a later term, or in the same term and is at least as long."""
        return last_term > self.last_term or (last_term == self.last_term and last_index >= self.last_index)

    # ---- time ----------------------------------------------------------------------------------------------

    def _reset_election_timer(self) -> None:
        timeout = self._cfg.election_timeout_ms
        self._election_due_ms = self._now + timeout + self._rng.randrange(timeout)

    def tick(self, now_ms: int) -> None:
        assert now_ms >= self._now, (now_ms, self._now)
        self._now = now_ms
        if self.role == Role.LEADER:
            if now_ms >= self._quorum_check_due_ms:
                self._quorum_check_due_ms = now_ms + self._cfg.election_timeout_ms
                if not self._quorum_active():
                    # Check-quorum (dissertation 6.2): a leader that cannot reach a majority steps down, so
                    # clients stop waiting on it and its lease no longer holds voters back.
                    self._become_follower(self.term, NO_NODE)
                    return
                for pr in self._progress.values():
                    pr.active = False
            for n, (_, give_up_ms) in list(self._leaving.items()):
                if now_ms >= give_up_ms:
                    self._forget_leaving(n)
            if self._transferee != NO_NODE and now_ms >= self._transfer_deadline_ms:
                self._transferee = NO_NODE  # the successor did not take over in time; keep leading
            if now_ms >= self._heartbeat_due_ms:
                self._heartbeat_due_ms = now_ms + self._cfg.heartbeat_interval_ms
                self._broadcast(heartbeat=True)
        elif now_ms >= self._election_due_ms:
            if self.id in self.conf.voters:
                self._pre_campaign()
            else:
                self._reset_election_timer()  # learners and removed nodes never campaign

    def leader_gone(self, node: NodeId) -> None:
        """The shell learned that ``node``'s controller process is gone (its connection closed and its port now
        refuses connections). A follower of it stops waiting a whole election timeout for heartbeats that cannot
        come: it forgets the leader (so it grants other candidates' pre-votes and votes: the leader stickiness of
        dissertation 4.2.3 protects a live leader, not a dead one) and campaigns soon. The survivors all see the death
        at once, so they take turns rather than split the vote: the one with the lowest id among the other voters
        first, the next a quarter election timeout later (room for a pre-vote and a synced vote round), and so on,
        each with a little jitter. Only timing changes: an election still needs a majority's pre-votes and votes, so
        a wrong report costs at most one election."""
        if self.role == Role.LEADER or self.leader != node or node == self.id:
            return
        self.leader = NO_NODE
        others = sorted(v for v in self.conf.voters if v != node)
        rank = others.index(self.id) if self.id in others else len(others)
        turn_ms = self._cfg.election_timeout_ms // 4
        delay_ms = rank * turn_ms + self._rng.randrange(turn_ms // 2 + 1)
        self._election_due_ms = min(self._election_due_ms, self._now + delay_ms)

    def campaign(self) -> None:
        """Start an election now instead of at the election timeout (etcd's Campaign), with a pre-vote first as
        when the timer fires: for a quorum of one at start-up. Learners and leaders do nothing."""
        if self.role != Role.LEADER and self.id in self.conf.voters:
            self._pre_campaign()

    def _quorum_active(self) -> bool:
        active = 1 if self.id in self.conf.voters else 0
        active += sum(1 for n, pr in self._progress.items() if pr.active and n in self.conf.voters)
        return active >= self.conf.quorum()

    # ---- roles ---------------------------------------------------------------------------------------------

    def _become_follower(self, term: Term, leader: NodeId) -> None:
        if term > self.term:
            self.term = term
            self.vote = NO_NODE
        self.role = Role.FOLLOWER
        self.leader = leader
        if leader != NO_NODE:
            self._leader_contact_ms = self._now
        self._reset_election_timer()
        self._votes = {}
        self._progress = {}
        self._leaving = {}
        self._transferee = NO_NODE
        self._pending_reads = []
        self._reads_waiting_commit = []
        self._broadcast_due = False

    def _pre_campaign(self) -> None:
        """Dissertation 9.6: ask whether we could win before raising our term, so a node that was cut off cannot
        disrupt a working leader when it comes back."""
        self.role = Role.PRE_CANDIDATE
        self.leader = NO_NODE
        self._reset_election_timer()
        self._votes = {self.id: True}
        if self._tally() == 1:
            self._campaign(transfer=False)
            return
        for peer in self.conf.voters - {self.id}:
            self._send(PreVote(self.id, peer, Term(self.term + 1), self.last_index, self.last_term))

    def _campaign(self, transfer: bool) -> None:
        self.term = Term(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE
        self.leader = NO_NODE
        self._reset_election_timer()
        self._votes = {self.id: True}
        if self._tally() == 1:
            self._become_leader()
            return
        for peer in self.conf.voters - {self.id}:
            self._send(Vote(self.id, peer, self.term, self.last_index, self.last_term, transfer))

    def _tally(self) -> int:
        """1 when a quorum of voters granted, -1 when a quorum refused, 0 while undecided."""
        granted = sum(1 for n, v in self._votes.items() if v and n in self.conf.voters)
        refused = sum(1 for n, v in self._votes.items() if not v and n in self.conf.voters)
        quorum = self.conf.quorum()
        return 1 if granted >= quorum else -1 if refused >= quorum else 0

    def _become_leader(self) -> None:
        self.role = Role.LEADER
        self.leader = self.id
        self._votes = {}
        self._transferee = NO_NODE
        self._progress = {n: Progress(next=Index(self.last_index + 1)) for n in self.conf.members - {self.id}}
        # Any configuration entry still uncommitted in our log must commit before another change may start.
        self._pending_conf_index = self.last_index
        self._quorum_check_due_ms = self._now + self._cfg.election_timeout_ms
        self._heartbeat_due_ms = self._now + self._cfg.heartbeat_interval_ms
        # Paper 5.4.2: entries of earlier terms commit only under an entry of this term; append one now.
        self._append_local(EntryKind.NOOP, b"")

    # ---- inputs from the application -----------------------------------------------------------------------

    def propose(self, data: bytes) -> Index:
        """Append a command; returns its index. It is committed once ``committed`` hands out an entry at that
        index with this node's current term (a different term there means the proposal was lost: retry)."""
        self._check_can_propose()
        return self._append_local(EntryKind.NORMAL, data)

    def _check_can_propose(self) -> None:
        if self.role != Role.LEADER:
            raise NotLeader(self.leader)
        if self._transferee != NO_NODE:
            raise ProposalDropped(f"leadership is being transferred to node {self._transferee}")
        if self.last_index - self.commit >= self._cfg.uncommitted_entries_max:
            raise ProposalDropped(f"{self.last_index - self.commit} entries are not committed yet")

    def _append_local(self, kind: EntryKind, data: bytes) -> Index:
        index = Index(self.last_index + 1)
        self._truncate_and_append([Entry(self.term, index, kind, data)])
        self._broadcast_due = True
        self._maybe_commit()
        return index

    def propose_conf_change(self, op: ConfChangeOp, node: NodeId) -> Index:
        """One server at a time (dissertation 4.1); a learner is promoted only once it has caught up (4.2.1)."""
        self._check_can_propose()
        if self._pending_conf_index > self.commit:
            raise ProposalDropped("another membership change is not committed yet")
        if self.term_at(self.commit) != self.term:
            # etcd's fix for the single-server change bug (raft-dev, 2015): commit in this term first.
            raise ProposalDropped("the leader has not committed an entry in its term yet")
        conf = self.conf
        if op == ConfChangeOp.ADD_LEARNER:
            if node in conf.members:
                raise ConfChangeError(f"node {node} is already a member")
            new = ConfState(conf.voters, conf.learners | {node})
        elif op == ConfChangeOp.PROMOTE:
            if node not in conf.learners:
                raise ConfChangeError(f"node {node} is not a learner")
            if self._progress[node].match < self.commit:
                raise ProposalDropped(f"learner {node} has not caught up yet")
            new = ConfState(conf.voters | {node}, conf.learners - {node})
        else:
            if node not in conf.members:
                raise ConfChangeError(f"node {node} is not a member")
            if conf.voters == {node}:
                raise ConfChangeError("cannot remove the last voter")
            new = ConfState(conf.voters - {node}, conf.learners - {node})
        index = self._append_local(EntryKind.CONFIG, new.encode())
        self._pending_conf_index = index
        return index

    def transfer_leadership(self, target: NodeId) -> None:
        if self.role != Role.LEADER:
            raise NotLeader(self.leader)
        if target == self.id:
            return
        if target not in self.conf.voters:
            raise ConfChangeError(f"node {target} is not a voter")
        self._transferee = target
        self._transfer_deadline_ms = self._now + self._cfg.election_timeout_ms
        pr = self._progress[target]
        if pr.match == self.last_index:
            self._send(TimeoutNow(self.id, target, self.term))
        else:
            self._send_append(target, pr)

    def read_index(self, ctx: int) -> None:
        """Dissertation 6.4: the read is served once applied up to the commit index of now, after a heartbeat
        round shows we are still the leader. The answer comes as a ReadState with ``ctx`` in a later Ready."""
        if self.role != Role.LEADER:
            raise NotLeader(self.leader)
        if len(self._pending_reads) + len(self._reads_waiting_commit) >= self._cfg.pending_reads_max:
            raise ProposalDropped("too many reads pending")
        if self.term_at(self.commit) != self.term:
            self._reads_waiting_commit.append(ctx)  # the commit index of a new leader is not yet known to be final
        else:
            self._issue_read(ctx)

    def _issue_read(self, ctx: int) -> None:
        if self.conf.voters == {self.id}:
            self._out.read_states.append(ReadState(ctx, self.commit))
            return
        self._read_seq += 1
        self._pending_reads.append(_PendingRead(self._read_seq, ctx, self.commit))
        self._broadcast(heartbeat=True)

    def compact(self, index: Index, data: bytes) -> Snapshot:
        """Take ``data`` (the state machine as of ``index``, already applied) as the new snapshot and drop the
        entries it covers. The caller persists the snapshot before it deletes those entries from disk."""
        assert self._snapshot.index < index <= self.applied, (self._snapshot.index, index, self.applied)
        assert self._unstable_from is None or self._unstable_from > index
        term = self.term_at(index)
        assert term is not None
        conf = self._snapshot.conf
        for at, c in self._conf_changes:
            if at <= index:
                conf = c
        self._conf_changes = [(at, c) for at, c in self._conf_changes if at > index]
        del self._entries[: index - self._snapshot.index]
        self._snapshot = Snapshot(index, term, conf, data)
        return self._snapshot

    # ---- inputs from peers ---------------------------------------------------------------------------------

    def step(self, msg: Message) -> None:
        if msg.dst != self.id or msg.src == self.id:
            return
        if msg.term > self.term:
            if isinstance(msg, PreVote | Vote):
                in_lease = self.role == Role.LEADER or (
                    self.leader != NO_NODE and self._now - self._leader_contact_ms < self._cfg.election_timeout_ms
                )
                if in_lease and not (isinstance(msg, Vote) and msg.transfer):
                    return  # a leader was heard from recently: this candidate is the disruptive one (4.2.3)
            if isinstance(msg, PreVote) or (isinstance(msg, PreVoteResp) and msg.granted):
                pass  # the term of a pre-vote is hypothetical; nobody's term changes for it
            else:
                leader = msg.src if isinstance(msg, Append | InstallSnapshot) else NO_NODE
                self._become_follower(msg.term, leader)
        elif msg.term < self.term:
            if isinstance(msg, Append | InstallSnapshot):
                # A deposed leader, maybe cut off for a while: tell it the current term so it steps down.
                self._send(AppendResp(self.id, msg.src, self.term, False, Index(0), Index(0), 0))
            elif isinstance(msg, PreVote):
                self._send(PreVoteResp(self.id, msg.src, self.term, False))
            return
        if isinstance(msg, PreVote):
            granted = msg.src in self.conf.voters and self._log_up_to_date(msg.last_index, msg.last_term)
            self._send(PreVoteResp(self.id, msg.src, msg.term if granted else self.term, granted))
        elif isinstance(msg, Vote):
            free = self.vote == msg.src or (self.vote == NO_NODE and self.leader == NO_NODE)
            granted = free and msg.src in self.conf.voters and self._log_up_to_date(msg.last_index, msg.last_term)
            if granted:
                self.vote = msg.src
                self._reset_election_timer()
            self._send(VoteResp(self.id, msg.src, self.term, granted))
        elif isinstance(msg, PreVoteResp):
            expected = self.term + 1 if msg.granted else self.term
            if self.role == Role.PRE_CANDIDATE and msg.term == expected:
                self._votes[msg.src] = msg.granted
                result = self._tally()
                if result == 1:
                    self._campaign(transfer=False)
                elif result == -1:
                    self._become_follower(self.term, NO_NODE)
        elif isinstance(msg, VoteResp):
            if self.role == Role.CANDIDATE:
                self._votes[msg.src] = msg.granted
                result = self._tally()
                if result == 1:
                    self._become_leader()
                elif result == -1:
                    self._become_follower(self.term, NO_NODE)
        elif isinstance(msg, Append | InstallSnapshot):
            assert self.role != Role.LEADER, f"two leaders in term {self.term}: {self.id} and {msg.src}"
            if self.role != Role.FOLLOWER or self.leader != msg.src:
                self._become_follower(self.term, msg.src)
            self._leader_contact_ms = self._now
            self._reset_election_timer()
            if isinstance(msg, Append):
                self._handle_append(msg)
            else:
                self._handle_snapshot(msg)
        elif isinstance(msg, AppendResp):
            if self.role == Role.LEADER:
                self._handle_append_resp(msg)
        elif isinstance(msg, TimeoutNow) and self.id in self.conf.voters and self.role == Role.FOLLOWER:
            self._campaign(transfer=True)

    def _handle_append(self, msg: Append) -> None:
        prev_index, prev_term, entries = msg.prev_index, msg.prev_term, list(msg.entries)
        if prev_index < self.commit:
            # Everything up to our commit index matches the leader's log (leader completeness): skip it.
            entries = [e for e in entries if e.index > self.commit]
            if not entries:
                self._send(AppendResp(self.id, msg.src, self.term, True, self.commit, Index(0), msg.read_seq))
                return
            prev_index = self.commit
            local = self.term_at(prev_index)
            assert local is not None
            prev_term = local
        local_term = self.term_at(prev_index)
        if local_term != prev_term:
            # Paper 5.3 with the fast back-off: our entries of terms after prev_term cannot match the leader's.
            hint = min(prev_index - 1, self.last_index)
            while hint > self.commit and (self.term_at(hint) or 0) > prev_term:
                hint -= 1
            self._send(AppendResp(self.id, msg.src, self.term, False, prev_index, Index(hint), msg.read_seq))
            return
        for i, e in enumerate(entries):
            if e.index > self.last_index or self.term_at(e.index) != e.term:
                self._truncate_and_append(entries[i:])
                break
        last_new = Index(prev_index + len(entries))
        self._commit_to(Index(min(msg.commit, last_new)))
        self._send(AppendResp(self.id, msg.src, self.term, True, last_new, Index(0), msg.read_seq))

    def _handle_snapshot(self, msg: InstallSnapshot) -> None:
        snap = msg.snapshot
        if snap.index <= self.commit:
            self._send(AppendResp(self.id, msg.src, self.term, True, self.commit, Index(0), 0))
            return
        if self.term_at(snap.index) == snap.term:
            self._commit_to(snap.index)  # our log already holds it: just learn that it is committed
        else:
            self._snapshot = snap
            self._entries = []
            self._conf_changes = []
            self.conf = snap.conf
            self.commit = snap.index
            self.applied = snap.index
            self._unstable_from = None
            self._received_snapshot = snap
        self._send(AppendResp(self.id, msg.src, self.term, True, snap.index, Index(0), 0))

    def _handle_append_resp(self, msg: AppendResp) -> None:
        pr = self._progress.get(msg.src)
        if pr is None:
            return
        pr.active = True
        if msg.read_seq > pr.read_seq:
            pr.read_seq = msg.read_seq
            self._release_reads()
        if msg.success:
            if msg.index > pr.match:
                pr.match = msg.index
                if self._maybe_commit():
                    self._broadcast_due = True
            pr.next = Index(max(pr.next, msg.index + 1))
            pr.state = _PeerState.REPLICATE
            pr.probe_sent = False
            leaving = self._leaving.get(msg.src)
            if leaving is not None and pr.match >= leaving[0]:
                self._forget_leaving(msg.src)
                return
            if msg.src == self._transferee and pr.match == self.last_index:
                self._send(TimeoutNow(self.id, msg.src, self.term))
            elif pr.next <= self.last_index:
                self._send_append(msg.src, pr)
        else:
            if msg.index <= pr.match:
                return  # a stale rejection, from before the follower matched further
            pr.next = Index(max(pr.match + 1, min(msg.index, msg.hint + 1)))
            pr.state = _PeerState.PROBE
            pr.probe_sent = False
            self._send_append(msg.src, pr)

    # ---- replication and commit ----------------------------------------------------------------------------

    def _broadcast(self, heartbeat: bool = False) -> None:
        self._broadcast_due = False
        for peer, pr in self._progress.items():
            if heartbeat:
                pr.probe_sent = False
                if pr.state == _PeerState.REPLICATE and pr.match < self.last_index:
                    pr.next = Index(pr.match + 1)  # resend what may have been lost; the check makes duplicates safe
            self._send_append(peer, pr, heartbeat)

    def _send_append(self, peer: NodeId, pr: Progress, heartbeat: bool = False) -> None:
        prev = pr.next - 1
        prev_term = self.term_at(prev)
        if prev_term is None:
            # The entries this follower needs are compacted: send the snapshot (paper 7), at most once per timeout.
            if pr.state != _PeerState.SNAPSHOT or self._now - pr.snapshot_sent_ms >= self._cfg.election_timeout_ms:
                pr.state = _PeerState.SNAPSHOT
                pr.snapshot_sent_ms = self._now
                self._send(InstallSnapshot(self.id, peer, self.term, self._snapshot))
            return
        if pr.state == _PeerState.SNAPSHOT and not heartbeat:
            return
        if pr.state == _PeerState.PROBE and pr.probe_sent and not heartbeat:
            return
        entries: list[Entry] = []
        if pr.state != _PeerState.SNAPSHOT and pr.next - pr.match - 1 < self._cfg.inflight_entries_max:
            size = 0
            for e in self.entries(pr.next, min(self.last_index, pr.next + self._cfg.entries_per_append_max - 1)):
                size += len(e.data)
                if entries and size > self._cfg.append_bytes_max:
                    break
                entries.append(e)
        self._send(
            Append(self.id, peer, self.term, Index(prev), prev_term, tuple(entries), self.commit, self._read_seq)
        )
        if pr.state == _PeerState.PROBE:
            pr.probe_sent = True
        elif entries:
            pr.next = Index(entries[-1].index + 1)

    def _maybe_commit(self) -> bool:
        """Paper 5.4.2: advance the commit index to the highest index of this term stored on a quorum of voters."""
        if self.role != Role.LEADER:
            return False
        matches = sorted(
            (self.last_index if n == self.id else self._progress[n].match for n in self.conf.voters), reverse=True
        )
        candidate = matches[self.conf.quorum() - 1]
        if candidate > self.commit and self.term_at(candidate) == self.term:
            self._commit_to(candidate)
            return True
        return False

    def _commit_to(self, index: Index) -> None:
        if index <= self.commit:
            return
        old = self.commit
        self.commit = index
        for e in self.entries(old + 1, index):
            if e.kind == EntryKind.CONFIG:
                conf = ConfState.decode(e.data)
                self._conf_changes.append((e.index, conf))
                self._apply_conf(conf, e.index)
        if self.role == Role.LEADER and self.term_at(self.commit) == self.term and self._reads_waiting_commit:
            waiting, self._reads_waiting_commit = self._reads_waiting_commit, []
            for ctx in waiting:
                self._issue_read(ctx)

    def _apply_conf(self, conf: ConfState, index: Index) -> None:
        removed = self.conf.members - conf.members
        self.conf = conf
        if self.role != Role.LEADER:
            return
        if self.id not in conf.voters:
            self._become_follower(self.term, NO_NODE)  # removed: stop leading; it will never campaign again
            return
        for n in conf.members - {self.id} - set(self._progress):
            self._progress[n] = Progress(next=Index(self.last_index + 1))
        for n in removed - {self.id}:
            # Keep replicating to a removed node until it has the entry that removes it, so it learns that it is
            # out and stops campaigning; give up after a while (it may be gone for good).
            self._leaving[n] = (index, self._now + 2 * self._cfg.election_timeout_ms)
        for n in set(self._progress) - conf.members - set(self._leaving):
            del self._progress[n]
        if self._transferee not in conf.voters:
            self._transferee = NO_NODE
        self._broadcast_due = True
        self._maybe_commit()  # a smaller quorum may already hold more
        self._release_reads()

    def _forget_leaving(self, node: NodeId) -> None:
        del self._leaving[node]
        if node not in self.conf.members:
            self._progress.pop(node, None)

    def _release_reads(self) -> None:
        if not self._pending_reads:
            return
        seqs = sorted(
            (self._read_seq if n == self.id else self._progress[n].read_seq for n in self.conf.voters), reverse=True
        )
        confirmed = seqs[self.conf.quorum() - 1]
        while self._pending_reads and self._pending_reads[0].seq <= confirmed:
            read = self._pending_reads.pop(0)
            self._out.read_states.append(ReadState(read.ctx, read.index))

    def _send(self, msg: Message) -> None:
        self._out.messages.append(msg)

    # ---- output --------------------------------------------------------------------------------------------

    def has_ready(self) -> bool:
        return bool(
            self._broadcast_due
            or self._out.messages
            or self._out.read_states
            or self._unstable_from is not None
            or self._received_snapshot is not None
            or self.applied < self.commit
            or self._hard_state() != self._persisted
        )

    def _hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.commit)

    def ready(self) -> Ready:
        if self._broadcast_due and self.role == Role.LEADER:
            self._broadcast()
        self._broadcast_due = False
        hs = self._hard_state()
        changed = hs != self._persisted
        must_sync = hs.term != self._persisted.term or hs.vote != self._persisted.vote
        entries: tuple[Entry, ...] = ()
        if self._unstable_from is not None:
            entries = tuple(self.entries(self._unstable_from, self.last_index))
            must_sync = True
        snapshot = self._received_snapshot
        must_sync = must_sync or snapshot is not None
        last = min(self.commit, self.applied + self._cfg.committed_per_ready_max)
        committed = tuple(self.entries(self.applied + 1, last)) if last > self.applied else ()
        self.applied = Index(last) if last > self.applied else self.applied
        out = Ready(
            hs if changed else None,
            must_sync,
            snapshot,
            entries,
            tuple(self._out.messages),
            committed,
            tuple(self._out.read_states),
        )
        self._out = _Outbox()
        self._persisted = hs
        self._unstable_from = None
        self._received_snapshot = None
        return out

    def status(self) -> Status:
        peers = tuple(PeerStatus(n, pr.match, pr.next, pr.state.value) for n, pr in sorted(self._progress.items()))
        return Status(
            self.id, self.role, self.term, self.leader, self.commit, self.applied, self.last_index,
            self._snapshot.index, self.conf, peers,
        )  # fmt: skip
