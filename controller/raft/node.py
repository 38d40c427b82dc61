"""The Raft state machine of one controller node (sans-IO, in the style of etcd's raft.go).

Runs in the controller's process, driven by a thin asyncio shell (the controller process's ``RaftController``) or by
the deterministic simulation in the tests. Inputs: ``step(message)``, ``tick(now_ms)``, ``propose``,
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

Split as etcd splits it: the log is ``log.RaftLog``, what the leader knows of its followers and the votes of an
election are ``tracker.ProgressTracker``, pending ReadIndex reads are ``read_only.ReadOnly``, and the configuration
in effect and the rules of a change are ``membership``. This module keeps the roles: the term rules common to all
of them in ``step``, then one step function and one tick function per role (``_step``, ``_tick``, set by the
``_become_*`` and campaign methods), and replication and commit, which tie the parts together.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from controller.raft.log import RaftLog
from controller.raft.membership import ConfChangeError, ConfChangeOp, Membership, changed_conf
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
from controller.raft.read_only import ReadOnly, ReadState
from controller.raft.tracker import PeerState, Progress, ProgressTracker
from controller.raft.types import NO_NODE, ConfState, Entry, EntryKind, HardState, Index, NodeId, Snapshot, Term

__all__ = [
    "ConfChangeError",
    "ConfChangeOp",
    "NotLeader",
    "PeerStatus",
    "Progress",
    "ProposalDropped",
    "RaftConfig",
    "RaftNode",
    "ReadState",
    "Ready",
    "Role",
    "Status",
]


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


class NotLeader(Exception):
    def __init__(self, leader: NodeId) -> None:
        super().__init__(f"not the leader (leader: {leader or 'unknown'})")
        self.leader = leader


class ProposalDropped(Exception):
    """The leader cannot take this now (transfer in progress, too much uncommitted, a change in flight): retry."""


@dataclass(frozen=True, slots=True)
class Ready:
    hard_state: HardState | None  # changed since the last Ready
    must_sync: bool  # term, vote, entries or a snapshot changed: fsync before sending
    snapshot: Snapshot | None  # received from the leader: persist it, drop the log it covers, restore from it
    entries: tuple[Entry, ...]  # persist from entries[0].index, discarding anything after that on disk
    messages: tuple[Message, ...]
    committed: tuple[Entry, ...]  # apply in order, after persisting
    read_states: tuple[ReadState, ...]


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
        self._log = RaftLog(snapshot, entries, hard_state.commit)
        self._members = Membership(snapshot.conf, self._log.entries(snapshot.index + 1, self._log.committed))
        self._tracker = ProgressTracker(self.id)
        self._reads = ReadOnly()
        self.role = Role.FOLLOWER
        self.leader = NO_NODE
        self._step: Callable[[Message], None] = self._step_follower
        self._tick: Callable[[], None] = self._tick_election
        self._leader_contact_ms = -(10**12)
        self._election_due_ms = 0
        self._reset_election_timer()
        self._heartbeat_due_ms = 0
        self._quorum_check_due_ms = 0
        self._transferee = NO_NODE
        self._transfer_deadline_ms = 0
        self._broadcast_due = False
        # Outputs not yet handed out by ready().
        self._out = _Outbox()
        self._persisted = hard_state

    # ---- the state callers read ----------------------------------------------------------------------------

    @property
    def commit(self) -> Index:
        return self._log.committed

    @property
    def applied(self) -> Index:
        """Committed entries up to here were handed out by ``ready()`` for applying."""
        return self._log.applied

    @property
    def conf(self) -> ConfState:
        """The configuration in effect: the last committed one."""
        return self._members.conf

    @property
    def last_index(self) -> Index:
        return self._log.last_index

    @property
    def last_term(self) -> Term:
        return self._log.last_term

    @property
    def snapshot(self) -> Snapshot:
        return self._log.snapshot

    def term_at(self, index: int) -> Term | None:
        """The term of the entry at ``index``; None if it is compacted away or beyond the log."""
        return self._log.term_at(index)

    def entries(self, first: int, last: int) -> list[Entry]:
        """Entries ``first..last`` inclusive; ``first`` must be after the snapshot."""
        return self._log.entries(first, last)

    def _log_up_to_date(self, last_index: Index, last_term: Term) -> bool:
        """Paper 5.4.1: the candidate's log ends in a later term, or in the same term and is at least as long."""
        return self._log.is_up_to_date(last_index, last_term)

    # ---- time ----------------------------------------------------------------------------------------------

    def _reset_election_timer(self) -> None:
        timeout = self._cfg.election_timeout_ms
        self._election_due_ms = self._now + timeout + self._rng.randrange(timeout)

    def tick(self, now_ms: int) -> None:
        assert now_ms >= self._now, (now_ms, self._now)
        self._now = now_ms
        self._tick()

    def _tick_election(self) -> None:
        """Followers and candidates: campaign when the election timeout passes without a leader."""
        if self._now >= self._election_due_ms:
            if self.id in self.conf.voters:
                self._pre_campaign()
            else:
                self._reset_election_timer()  # learners and removed nodes never campaign

    def _tick_leader(self) -> None:
        now_ms = self._now
        if now_ms >= self._quorum_check_due_ms:
            self._quorum_check_due_ms = now_ms + self._cfg.election_timeout_ms
            if not self._tracker.quorum_active(self.conf):
                # Check-quorum (dissertation 6.2): a leader that cannot reach a majority steps down, so
                # clients stop waiting on it and its lease no longer holds voters back.
                self._become_follower(self.term, NO_NODE)
                return
            self._tracker.reset_active()
        for n in self._members.overdue(now_ms):
            self._forget_leaving(n)
        if self._transferee != NO_NODE and now_ms >= self._transfer_deadline_ms:
            self._transferee = NO_NODE  # the successor did not take over in time; keep leading
        if now_ms >= self._heartbeat_due_ms:
            self._heartbeat_due_ms = now_ms + self._cfg.heartbeat_interval_ms
            self._broadcast(heartbeat=True)

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

    # ---- roles ---------------------------------------------------------------------------------------------

    def _become_follower(self, term: Term, leader: NodeId) -> None:
        if term > self.term:
            self.term = term
            self.vote = NO_NODE
        self.role = Role.FOLLOWER
        self._step, self._tick = self._step_follower, self._tick_election
        self.leader = leader
        if leader != NO_NODE:
            self._leader_contact_ms = self._now
        self._reset_election_timer()
        self._tracker.clear()
        self._members.clear_leaving()
        self._transferee = NO_NODE
        self._reads.reset()
        self._broadcast_due = False

    def _pre_campaign(self) -> None:
        """Dissertation 9.6: ask whether we could win before raising our term, so a node that was cut off cannot
        disrupt a working leader when it comes back."""
        self.role = Role.PRE_CANDIDATE
        self._step, self._tick = self._step_pre_candidate, self._tick_election
        self.leader = NO_NODE
        self._reset_election_timer()
        self._tracker.start_election()
        if self._tracker.tally(self.conf) == 1:
            self._campaign(transfer=False)
            return
        for peer in self.conf.voters - {self.id}:
            self._send(PreVote(self.id, peer, Term(self.term + 1), self.last_index, self.last_term))

    def _campaign(self, transfer: bool) -> None:
        self.term = Term(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE
        self._step, self._tick = self._step_candidate, self._tick_election
        self.leader = NO_NODE
        self._reset_election_timer()
        self._tracker.start_election()
        if self._tracker.tally(self.conf) == 1:
            self._become_leader()
            return
        for peer in self.conf.voters - {self.id}:
            self._send(Vote(self.id, peer, self.term, self.last_index, self.last_term, transfer))

    def _become_leader(self) -> None:
        self.role = Role.LEADER
        self._step, self._tick = self._step_leader, self._tick_leader
        self.leader = self.id
        self._transferee = NO_NODE
        self._tracker.start_leading(self.conf.members, Index(self.last_index + 1))
        # Any configuration entry still uncommitted in our log must commit before another change may start.
        self._members.pending_index = self.last_index
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
        self._log.truncate_and_append([Entry(self.term, index, kind, data)])
        self._broadcast_due = True
        self._maybe_commit()
        return index

    def propose_conf_change(self, op: ConfChangeOp, node: NodeId) -> Index:
        """One server at a time (dissertation 4.1); a learner is promoted only once it has caught up (4.2.1)."""
        self._check_can_propose()
        if self._members.pending_index > self.commit:
            raise ProposalDropped("another membership change is not committed yet")
        if self.term_at(self.commit) != self.term:
            # etcd's fix for the single-server change bug (raft-dev, 2015): commit in this term first.
            raise ProposalDropped("the leader has not committed an entry in its term yet")
        new = changed_conf(self.conf, op, node)
        if op == ConfChangeOp.PROMOTE and self._tracker.progress[node].match < self.commit:
            raise ProposalDropped(f"learner {node} has not caught up yet")
        index = self._append_local(EntryKind.CONFIG, new.encode())
        self._members.pending_index = index
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
        pr = self._tracker.progress[target]
        if pr.match == self.last_index:
            self._send(TimeoutNow(self.id, target, self.term))
        else:
            self._send_append(target, pr)

    def read_index(self, ctx: int) -> None:
        """Dissertation 6.4: the read is served once applied up to the commit index of now, after a heartbeat
        round shows we are still the leader. The answer comes as a ReadState with ``ctx`` in a later Ready."""
        if self.role != Role.LEADER:
            raise NotLeader(self.leader)
        if len(self._reads) >= self._cfg.pending_reads_max:
            raise ProposalDropped("too many reads pending")
        if self.term_at(self.commit) != self.term:
            self._reads.wait_for_commit(ctx)  # the commit index of a new leader is not yet known to be final
        else:
            self._issue_read(ctx)

    def _issue_read(self, ctx: int) -> None:
        if self.conf.voters == {self.id}:
            self._out.read_states.append(ReadState(ctx, self.commit))
            return
        self._reads.add(ctx, self.commit)
        self._broadcast(heartbeat=True)

    def _release_reads(self) -> None:
        if not self._reads.has_pending():
            return
        confirmed = self._tracker.quorum_read_seq(self.conf, self._reads.seq)
        self._out.read_states.extend(self._reads.release(confirmed))

    def compact(self, index: Index, data: bytes) -> Snapshot:
        """Take ``data`` (the state machine as of ``index``, already applied) as the new snapshot and drop the
        entries it covers. The caller persists the snapshot before it deletes those entries from disk."""
        conf = self._members.conf_at(index, self._log.snapshot.conf)
        snapshot = self._log.compact(index, conf, data)
        self._members.drop_history(index)
        return snapshot

    # ---- inputs from peers: the rules of every role --------------------------------------------------------

    def step(self, msg: Message) -> None:
        if msg.dst != self.id or msg.src == self.id:
            return
        if msg.term > self.term:
            if not self._step_later_term(msg):
                return
        elif msg.term < self.term:
            self._answer_stale(msg)
            return
        if isinstance(msg, PreVote):
            self._handle_pre_vote(msg)
        elif isinstance(msg, Vote):
            self._handle_vote(msg)
        else:
            self._step(msg)

    def _step_later_term(self, msg: Message) -> bool:
        """A message of a later term than ours: False to ignore it; otherwise become a follower in that term,
        unless the term is a pre-vote's, which is hypothetical (nobody's term changes for it)."""
        if isinstance(msg, PreVote | Vote):
            in_lease = self.role == Role.LEADER or (
                self.leader != NO_NODE and self._now - self._leader_contact_ms < self._cfg.election_timeout_ms
            )
            if in_lease and not (isinstance(msg, Vote) and msg.transfer):
                return False  # a leader was heard from recently: this candidate is the disruptive one (4.2.3)
        if isinstance(msg, PreVote) or (isinstance(msg, PreVoteResp) and msg.granted):
            return True
        leader = msg.src if isinstance(msg, Append | InstallSnapshot) else NO_NODE
        self._become_follower(msg.term, leader)
        return True

    def _answer_stale(self, msg: Message) -> None:
        """A message of an earlier term than ours."""
        if isinstance(msg, Append | InstallSnapshot):
            # A deposed leader, maybe cut off for a while: tell it the current term so it steps down.
            self._send(AppendResp(self.id, msg.src, self.term, False, Index(0), Index(0), 0))
        elif isinstance(msg, PreVote):
            self._send(PreVoteResp(self.id, msg.src, self.term, False))

    def _handle_pre_vote(self, msg: PreVote) -> None:
        granted = msg.src in self.conf.voters and self._log_up_to_date(msg.last_index, msg.last_term)
        self._send(PreVoteResp(self.id, msg.src, msg.term if granted else self.term, granted))

    def _handle_vote(self, msg: Vote) -> None:
        free = self.vote == msg.src or (self.vote == NO_NODE and self.leader == NO_NODE)
        granted = free and msg.src in self.conf.voters and self._log_up_to_date(msg.last_index, msg.last_term)
        if granted:
            self.vote = msg.src
            self._reset_election_timer()
        self._send(VoteResp(self.id, msg.src, self.term, granted))

    # ---- inputs from peers: one step function per role -----------------------------------------------------

    def _step_follower(self, msg: Message) -> None:
        if isinstance(msg, Append | InstallSnapshot):
            if self.leader != msg.src:
                self._become_follower(self.term, msg.src)
            self._from_leader(msg)
        elif isinstance(msg, TimeoutNow) and self.id in self.conf.voters:
            self._campaign(transfer=True)

    def _step_pre_candidate(self, msg: Message) -> None:
        if isinstance(msg, PreVoteResp):
            if msg.term != (self.term + 1 if msg.granted else self.term):
                return
            result = self._count_vote(msg.src, msg.granted)
            if result == 1:
                self._campaign(transfer=False)
            elif result == -1:
                self._become_follower(self.term, NO_NODE)
        elif isinstance(msg, Append | InstallSnapshot):
            self._become_follower(self.term, msg.src)
            self._from_leader(msg)

    def _step_candidate(self, msg: Message) -> None:
        if isinstance(msg, VoteResp):
            result = self._count_vote(msg.src, msg.granted)
            if result == 1:
                self._become_leader()
            elif result == -1:
                self._become_follower(self.term, NO_NODE)
        elif isinstance(msg, Append | InstallSnapshot):
            self._become_follower(self.term, msg.src)
            self._from_leader(msg)

    def _step_leader(self, msg: Message) -> None:
        if isinstance(msg, AppendResp):
            self._handle_append_resp(msg)
        elif isinstance(msg, Append | InstallSnapshot):
            raise AssertionError(f"two leaders in term {self.term}: {self.id} and {msg.src}")

    def _count_vote(self, node: NodeId, granted: bool) -> int:
        """1 when a quorum of voters granted, -1 when a quorum refused, 0 while undecided."""
        self._tracker.record_vote(node, granted)
        return self._tracker.tally(self.conf)

    def _from_leader(self, msg: Append | InstallSnapshot) -> None:
        self._leader_contact_ms = self._now
        self._reset_election_timer()
        if isinstance(msg, Append):
            self._handle_append(msg)
        else:
            self._handle_snapshot(msg)

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
        if self.term_at(prev_index) != prev_term:
            hint = self._log.conflict_hint(prev_index, prev_term)
            self._send(AppendResp(self.id, msg.src, self.term, False, prev_index, hint, msg.read_seq))
            return
        self._log.append_new(entries)
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
            self._log.restore(snap)
            self._members.restore(snap.conf)
        self._send(AppendResp(self.id, msg.src, self.term, True, snap.index, Index(0), 0))

    def _handle_append_resp(self, msg: AppendResp) -> None:
        pr = self._tracker.progress.get(msg.src)
        if pr is None:
            return
        pr.active = True
        if msg.read_seq > pr.read_seq:
            pr.read_seq = msg.read_seq
            self._release_reads()
        if msg.success:
            self._append_accepted(msg.src, pr, msg.index)
        elif msg.index > pr.match:  # else a stale rejection, from before the follower matched further
            pr.become_probe(Index(max(pr.match + 1, min(msg.index, msg.hint + 1))))
            self._send_append(msg.src, pr)

    def _append_accepted(self, peer: NodeId, pr: Progress, index: Index) -> None:
        if index > pr.match:
            pr.match = index
            if self._maybe_commit():
                self._broadcast_due = True
        pr.become_replicate(index)
        if self._members.has_learned_removal(peer, pr.match):
            self._forget_leaving(peer)
        elif peer == self._transferee and pr.match == self.last_index:
            self._send(TimeoutNow(self.id, peer, self.term))
        elif pr.next <= self.last_index:
            self._send_append(peer, pr)

    # ---- replication and commit ----------------------------------------------------------------------------

    def _broadcast(self, heartbeat: bool = False) -> None:
        self._broadcast_due = False
        for peer, pr in self._tracker.progress.items():
            if heartbeat:
                pr.probe_sent = False
                if pr.state == PeerState.REPLICATE and pr.match < self.last_index:
                    pr.next = Index(pr.match + 1)  # resend what may have been lost; the check makes duplicates safe
            self._send_append(peer, pr, heartbeat)

    def _send_append(self, peer: NodeId, pr: Progress, heartbeat: bool = False) -> None:
        prev = pr.next - 1
        prev_term = self.term_at(prev)
        if prev_term is None:
            # The entries this follower needs are compacted: send the snapshot (paper 7), at most once per timeout.
            if pr.state != PeerState.SNAPSHOT or self._now - pr.snapshot_sent_ms >= self._cfg.election_timeout_ms:
                pr.state = PeerState.SNAPSHOT
                pr.snapshot_sent_ms = self._now
                self._send(InstallSnapshot(self.id, peer, self.term, self._log.snapshot))
            return
        if pr.state == PeerState.SNAPSHOT and not heartbeat:
            return
        if pr.state == PeerState.PROBE and pr.probe_sent and not heartbeat:
            return
        entries: list[Entry] = []
        if pr.state != PeerState.SNAPSHOT and not pr.inflight_full(self._cfg.inflight_entries_max):
            entries = self._log.batch(pr.next, self._cfg.entries_per_append_max, self._cfg.append_bytes_max)
        self._send(
            Append(self.id, peer, self.term, Index(prev), prev_term, tuple(entries), self.commit, self._reads.seq)
        )
        if pr.state == PeerState.PROBE:
            pr.probe_sent = True
        elif entries:
            pr.next = Index(entries[-1].index + 1)

    def _maybe_commit(self) -> bool:
        """Paper 5.4.2: advance the commit index to the highest index of this term stored on a quorum of voters."""
        if self.role != Role.LEADER:
            return False
        candidate = self._tracker.quorum_match(self.conf, self.last_index)
        if candidate > self.commit and self.term_at(candidate) == self.term:
            self._commit_to(candidate)
            return True
        return False

    def _commit_to(self, index: Index) -> None:
        if index <= self.commit:
            return
        for e in self._log.commit_to(index):
            if e.kind == EntryKind.CONFIG:
                self._apply_conf(ConfState.decode(e.data), e.index)
        if self.role == Role.LEADER and self.term_at(self.commit) == self.term and self._reads.has_waiting_for_commit():
            for ctx in self._reads.take_waiting_for_commit():
                self._issue_read(ctx)

    def _apply_conf(self, conf: ConfState, index: Index) -> None:
        removed = self._members.apply(index, conf)
        if self.role != Role.LEADER:
            return
        if self.id not in conf.voters:
            self._become_follower(self.term, NO_NODE)  # removed: stop leading; it will never campaign again
            return
        tracked = self._tracker.progress
        self._tracker.track(conf.members - {self.id} - set(tracked), Index(self.last_index + 1))
        self._members.leave(removed - {self.id}, index, self._now + 2 * self._cfg.election_timeout_ms)
        self._tracker.untrack(set(tracked) - conf.members - set(self._members.leaving))
        if self._transferee not in conf.voters:
            self._transferee = NO_NODE
        self._broadcast_due = True
        self._maybe_commit()  # a smaller quorum may already hold more
        self._release_reads()

    def _forget_leaving(self, node: NodeId) -> None:
        if self._members.forget_leaving(node):
            self._tracker.untrack([node])

    def _send(self, msg: Message) -> None:
        self._out.messages.append(msg)

    # ---- output --------------------------------------------------------------------------------------------

    def has_ready(self) -> bool:
        return bool(
            self._broadcast_due
            or self._out.messages
            or self._out.read_states
            or self._log.has_unstable()
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
        must_sync = hs.term != self._persisted.term or hs.vote != self._persisted.vote or self._log.has_unstable()
        snapshot, entries = self._log.take_unstable()
        committed = self._log.take_committed(self._cfg.committed_per_ready_max)
        messages, read_states = tuple(self._out.messages), tuple(self._out.read_states)
        self._out = _Outbox()
        self._persisted = hs
        return Ready(hs if changed else None, must_sync, snapshot, entries, messages, committed, read_states)

    def status(self) -> Status:
        peers = tuple(
            PeerStatus(n, pr.match, pr.next, pr.state.value) for n, pr in sorted(self._tracker.progress.items())
        )
        return Status(
            self.id, self.role, self.term, self.leader, self.commit, self.applied, self.last_index,
            self._log.snapshot.index, self.conf, peers,
        )  # fmt: skip
