"""Rules of the Raft paper (Ongaro & Ousterhout 2014) and dissertation (Ongaro 2014), one test each, on RaftNode.

Each test quotes the sentence it checks. Messages are passed by hand; the clock is a number.
"""

from __future__ import annotations

import random

import pytest

from controller.raft.messages import (
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
from controller.raft.node import ConfChangeOp, NotLeader, ProposalDropped, RaftConfig, RaftNode, Ready, Role
from controller.raft.types import ConfState, Entry, EntryKind, HardState, Index, NodeId, Snapshot, Term

ET = 1000  # election timeout, ms
N1, N2, N3 = NodeId(1), NodeId(2), NodeId(3)


def node(
    node_id: NodeId = N1,
    voters: tuple[int, ...] = (1, 2, 3),
    term: int = 0,
    entries: tuple[int, ...] = (),  # terms of the entries in the log
    vote: int = 0,
    now_ms: int = 0,
) -> RaftNode:
    conf = ConfState(frozenset(NodeId(v) for v in voters))
    log = [Entry(Term(t), Index(i + 1), EntryKind.NORMAL, b"e%d" % (i + 1)) for i, t in enumerate(entries)]
    return RaftNode(
        RaftConfig(node_id, election_timeout_ms=ET, heartbeat_interval_ms=100),
        random.Random(1),
        now_ms,
        HardState(Term(term), NodeId(vote), Index(0)),
        Snapshot(Index(0), Term(0), conf, b""),
        log,
    )


def drain(n: RaftNode) -> list[Message]:
    out: list[Message] = []
    while n.has_ready():
        out.extend(n.ready().messages)
    return out


def elect(n: RaftNode) -> None:
    """Make ``n`` (node 1 of three) the leader: pre-vote, then vote, with node 2's support."""
    n.tick(2 * ET)
    drain(n)
    n.step(PreVoteResp(N2, n.id, Term(n.term + 1), True))
    drain(n)
    n.step(VoteResp(N2, n.id, n.term, True))
    assert n.role == Role.LEADER


def test_single_voter_elects_itself_and_commits_on_its_own() -> None:
    n = node(voters=(1,))
    n.tick(2 * ET)
    assert n.role == Role.LEADER and n.term == 1
    rd = n.ready()
    assert rd.must_sync and rd.hard_state == HardState(Term(1), N1, Index(1))
    assert [e.kind for e in rd.entries] == [EntryKind.NOOP] and rd.committed == rd.entries
    index = n.propose(b"x")
    rd = n.ready()
    assert [e.index for e in rd.entries] == [index] == [e.index for e in rd.committed]


def test_campaign_starts_an_election_without_waiting_and_ticks_go_on_from_the_real_clock() -> None:
    single = node(voters=(1,), now_ms=5000)
    single.campaign()
    assert single.role == Role.LEADER and single.term == 1
    single.tick(5050)  # the clock was not moved ahead to get there
    assert single.role == Role.LEADER
    three = node()
    three.campaign()
    assert three.role == Role.PRE_CANDIDATE and three.term == 0  # still a pre-vote first
    assert {m.dst for m in drain(three) if isinstance(m, PreVote)} == {N2, N3}
    learner = node(node_id=NodeId(4))
    learner.campaign()
    assert learner.role == Role.FOLLOWER


def test_pre_vote_does_not_raise_the_term() -> None:
    """Dissertation 9.6: 'a candidate would first ask other servers whether its log was up-to-date enough to get
    their vote. Only if the candidate believed it could get votes from a majority ... would it increment its term'."""
    n = node(term=3)
    n.tick(2 * ET)
    assert n.role == Role.PRE_CANDIDATE and n.term == 3 and n.vote == 0
    msgs = drain(n)
    assert {type(m) for m in msgs} == {PreVote} and {m.term for m in msgs} == {4}
    n.step(PreVoteResp(N2, N1, Term(3), False))
    n.step(PreVoteResp(N3, N1, Term(3), False))
    assert n.role == Role.FOLLOWER and n.term == 3


def test_vote_once_per_term() -> None:
    """Paper figure 2, RequestVote: 'If votedFor is null or candidateId, and candidate's log is at least as
    up-to-date as receiver's log, grant vote'."""
    n = node()
    n.step(Vote(N2, N1, Term(1), Index(0), Term(0), False))
    assert drain(n)[-1] == VoteResp(N1, N2, Term(1), True)
    n.step(Vote(N3, N1, Term(1), Index(0), Term(0), False))
    assert drain(n)[-1] == VoteResp(N1, N3, Term(1), False)
    n.step(Vote(N2, N1, Term(1), Index(0), Term(0), False))  # a retransmission is granted again
    assert drain(n)[-1] == VoteResp(N1, N2, Term(1), True)


def test_vote_and_term_are_synced_before_the_response_is_sent() -> None:
    """Paper figure 2: 'Updated on stable storage before responding to RPCs'."""
    n = node()
    n.step(Vote(N2, N1, Term(4), Index(0), Term(0), False))
    rd = n.ready()
    assert rd.must_sync and rd.hard_state == HardState(Term(4), N2, Index(0)) and rd.messages


def test_vote_refused_to_a_candidate_with_a_shorter_or_older_log() -> None:
    """Paper 5.4.1: 'If the logs have last entries with different terms, then the log with the later term is more
    up-to-date. If the logs end with the same term, then whichever log is longer is more up-to-date.'"""
    n = node(term=2, entries=(1, 2, 2))
    n.step(Vote(N2, N1, Term(3), Index(5), Term(1), False))
    assert drain(n)[-1] == VoteResp(N1, N2, Term(3), False)
    n.step(Vote(N3, N1, Term(4), Index(2), Term(2), False))
    assert drain(n)[-1] == VoteResp(N1, N3, Term(4), False)
    n.step(Vote(N3, N1, Term(5), Index(1), Term(3), False))
    assert drain(n)[-1] == VoteResp(N1, N3, Term(5), True)


def test_a_follower_in_a_leader_lease_ignores_candidates() -> None:
    """Dissertation 4.2.3: 'if a server receives a RequestVote request within the minimum election timeout of
    hearing from a current leader, it does not update its term or grant its vote'."""
    n = node(node_id=N3, term=1)
    n.step(Append(N1, N3, Term(1), Index(0), Term(0), (), Index(0), 0))
    drain(n)
    n.tick(ET // 2)
    n.step(Vote(N2, N3, Term(2), Index(9), Term(1), False))
    assert n.term == 1 and drain(n) == []
    n.step(Vote(N2, N3, Term(2), Index(9), Term(1), transfer=True))  # unless the leader asked for it
    assert n.term == 2 and drain(n)[-1] == VoteResp(N3, N2, Term(2), True)


def test_a_follower_told_its_leader_is_gone_campaigns_early_and_grants_votes() -> None:
    """Not in the paper (a liveness shortcut; safety is untouched): a follower whose leader's process is gone (the
    shell saw its port refuse connections) campaigns within half an election timeout instead of a whole one, in turn
    with the other survivors (lowest id first), and no longer ignores candidates as it would within a live leader's
    lease (dissertation 4.2.3)."""
    n = node(node_id=N3, term=1)
    n.step(Append(N1, N3, Term(1), Index(0), Term(0), (), Index(0), 0))
    drain(n)
    n.leader_gone(N2)  # not its leader: nothing changes
    assert n.leader == N1
    n.leader_gone(N1)
    assert n.leader != N1 and n.role == Role.FOLLOWER
    n.tick(ET // 4 - 1)
    assert n.role == Role.FOLLOWER  # node 2 goes first
    n.tick(ET // 2)
    assert n.role == Role.PRE_CANDIDATE and any(isinstance(m, PreVote) for m in drain(n))
    other = node(node_id=N2, term=1)
    other.step(Append(N1, N2, Term(1), Index(0), Term(0), (), Index(0), 0))
    drain(other)
    other.leader_gone(N1)
    other.tick(ET // 8)
    assert other.role == Role.PRE_CANDIDATE
    drain(other)
    other.step(Vote(N3, N2, Term(2), Index(0), Term(0), False))
    assert drain(other)[-1] == VoteResp(N2, N3, Term(2), True)


def test_check_quorum_leader_steps_down_without_a_majority() -> None:
    """Dissertation 6.2: 'a leader steps down if an election timeout elapses without a successful round of
    heartbeats to a majority of its cluster'."""
    n = node()
    elect(n)
    n.step(AppendResp(N2, N1, n.term, True, Index(1), Index(0), 0))
    n.tick(2 * ET + ET)  # the first check: node 2 answered
    assert n.role == Role.LEADER
    n.tick(2 * ET + 2 * ET)  # the second: nobody did
    assert n.role == Role.FOLLOWER and n.leader == 0


def test_leader_commits_only_entries_of_its_own_term_by_counting() -> None:
    """Paper 5.4.2: 'Raft never commits log entries from previous terms by counting replicas. Only log entries
    from the leader's current term are committed by counting replicas'."""
    n = node(term=1, entries=(1, 1))
    elect(n)  # term 2, no-op at index 3
    drain(n)
    n.step(AppendResp(N2, N1, n.term, True, Index(2), Index(0), 0))
    assert n.commit == 0  # entries 1-2 are on a majority, but of term 1
    n.step(AppendResp(N2, N1, n.term, True, Index(3), Index(0), 0))
    assert n.commit == 3


def test_append_consistency_check_and_back_off() -> None:
    """Paper 5.3: 'If a follower's log is inconsistent with the leader's, the AppendEntries consistency check will
    fail in the next AppendEntries RPC. After a rejection, the leader decrements nextIndex and retries'."""
    f = node(node_id=N2, term=3, entries=(1, 3, 3, 3))
    f.step(Append(N1, N2, Term(4), Index(4), Term(2), (), Index(0), 0))
    resp = drain(f)[-1]
    assert isinstance(resp, AppendResp) and not resp.success
    assert resp.hint == 1  # entries of term 3 cannot match a leader whose entry 4 has term 2
    entries = (Entry(Term(4), Index(2), EntryKind.NORMAL, b"new"),)
    f.step(Append(N1, N2, Term(4), Index(1), Term(1), entries, Index(2), 0))
    assert drain(f)[-1] == AppendResp(N2, N1, Term(4), True, Index(2), Index(0), 0)
    assert f.last_index == 2 and f.commit == 2 and f.entries(2, 2) == list(entries)


def test_committed_entries_are_never_rewritten() -> None:
    f = node(node_id=N2, term=1, entries=(1, 1))
    f.step(Append(N1, N2, Term(1), Index(2), Term(1), (), Index(2), 0))
    drain(f)
    before = f.entries(1, 2)
    f.step(Append(N1, N2, Term(2), Index(0), Term(0), (Entry(Term(2), Index(1), EntryKind.NORMAL, b""),), 0, 0))
    assert f.entries(1, 2) == before
    assert drain(f)[-1] == AppendResp(N2, N1, Term(2), True, Index(2), Index(0), 0)


def test_install_snapshot_replaces_a_conflicting_log() -> None:
    """Paper section 7: 'If the snapshot contains new information not already in the recipient's log, the
    follower discards its entire log; it is all superseded by the snapshot'."""
    f = node(node_id=N2, term=1, entries=(1, 1))
    snap = Snapshot(Index(10), Term(2), ConfState(frozenset({N1, N2, N3})), b"state")
    f.step(InstallSnapshot(N1, N2, Term(2), snap))
    rd: Ready = f.ready()
    assert rd.snapshot == snap and rd.must_sync and rd.entries == () and rd.committed == ()
    assert rd.messages[-1] == AppendResp(N2, N1, Term(2), True, Index(10), Index(0), 0)
    assert f.last_index == 10 and f.commit == 10 and f.applied == 10


def test_leader_sends_its_snapshot_to_a_follower_behind_it() -> None:
    n = node(voters=(1,))
    n.tick(2 * ET)
    for i in range(5):
        n.propose(b"%d" % i)
    n.ready()
    n.compact(Index(4), b"four")
    # Add node 2 as a learner: the entries it needs are gone, so it gets the snapshot.
    n.propose_conf_change(ConfChangeOp.ADD_LEARNER, N2)
    probe = next(m for m in drain(n) if isinstance(m, Append) and m.dst == N2)
    n.step(AppendResp(N2, N1, n.term, False, probe.prev_index, Index(0), 0))
    msgs = drain(n)
    snaps = [m for m in msgs if isinstance(m, InstallSnapshot)]
    assert snaps and snaps[0].dst == N2 and snaps[0].snapshot.data == b"four"


def test_learner_is_promoted_only_after_catching_up() -> None:
    """Dissertation 4.2.1: 'the new servers join the cluster as non-voting members ... Once the new servers have
    caught up with the rest of the cluster, the reconfiguration can proceed'."""
    n = node(voters=(1,))
    n.tick(2 * ET)
    n.propose(b"x")
    drain(n)
    n.propose_conf_change(ConfChangeOp.ADD_LEARNER, N2)
    drain(n)
    assert n.conf.learners == {N2}
    with pytest.raises(ProposalDropped, match="caught up"):
        n.propose_conf_change(ConfChangeOp.PROMOTE, N2)
    n.step(AppendResp(N2, N1, n.term, True, n.last_index, Index(0), 0))
    n.propose_conf_change(ConfChangeOp.PROMOTE, N2)  # committed by the old configuration: node 1 alone
    assert n.conf.voters == {N1, N2} and n.commit == n.last_index
    n.propose(b"y")  # from now on node 2 must store an entry before it commits
    assert n.commit == n.last_index - 1
    n.step(AppendResp(N2, N1, n.term, True, n.last_index, Index(0), 0))
    assert n.commit == n.last_index


def test_one_membership_change_at_a_time() -> None:
    n = node(voters=(1, 2, 3))
    elect(n)
    n.step(AppendResp(N2, N1, n.term, True, n.last_index, Index(0), 0))
    n.propose_conf_change(ConfChangeOp.REMOVE, N3)
    with pytest.raises(ProposalDropped, match="another membership change"):
        n.propose_conf_change(ConfChangeOp.ADD_LEARNER, NodeId(4))


def test_removed_leader_steps_down_and_never_campaigns() -> None:
    n = node(voters=(1, 2))
    n.tick(2 * ET)
    drain(n)
    n.step(PreVoteResp(N2, N1, Term(1), True))
    n.step(VoteResp(N2, N1, Term(1), True))
    n.step(AppendResp(N2, N1, n.term, True, n.last_index, Index(0), 0))
    n.propose_conf_change(ConfChangeOp.REMOVE, N1)
    drain(n)
    n.step(AppendResp(N2, N1, n.term, True, n.last_index, Index(0), 0))
    assert n.role == Role.FOLLOWER and n.conf.voters == {N2}
    n.tick(100 * ET)
    assert n.role == Role.FOLLOWER and not any(isinstance(m, PreVote) for m in drain(n))


def test_leadership_transfer_sends_timeout_now_once_the_target_caught_up() -> None:
    """Dissertation 3.10: 'the prior leader sends a TimeoutNow request to the target server ... causes the target
    server to start a new election immediately'."""
    n = node()
    elect(n)
    drain(n)
    n.transfer_leadership(N2)
    with pytest.raises(ProposalDropped):
        n.propose(b"x")
    assert not any(isinstance(m, TimeoutNow) for m in drain(n))
    n.step(AppendResp(N2, N1, n.term, True, n.last_index, Index(0), 0))
    assert TimeoutNow(N1, N2, n.term) in drain(n)
    t = node(node_id=N2, term=n.term)
    t.step(TimeoutNow(N1, N2, n.term))
    votes = [m for m in drain(t) if isinstance(m, Vote)]
    assert t.role == Role.CANDIDATE and votes and all(v.transfer for v in votes)


def test_read_index_waits_for_a_heartbeat_round() -> None:
    """Dissertation 6.4: 'The leader needs to make sure it hasn't been superseded ... it sends a new round of
    heartbeats and waits for their acknowledgments from a majority of the cluster'."""
    n = node()
    elect(n)
    n.step(AppendResp(N2, N1, n.term, True, n.last_index, Index(0), 0))
    drain(n)
    n.read_index(42)
    beats = [m for m in n.ready().messages if isinstance(m, Append)]
    assert beats and n.ready().read_states == ()
    n.step(AppendResp(N3, N1, n.term, True, n.last_index, Index(0), beats[0].read_seq))
    rd = n.ready()
    assert [(r.ctx, r.index) for r in rd.read_states] == [(42, n.commit)]


def test_followers_refuse_proposals_naming_the_leader() -> None:
    f = node(node_id=N2, term=1)
    f.step(Append(N1, N2, Term(1), Index(0), Term(0), (), Index(0), 0))
    with pytest.raises(NotLeader) as e:
        f.propose(b"x")
    assert e.value.leader == N1


def test_restart_recovers_configuration_from_committed_entries() -> None:
    conf = ConfState(frozenset({N1, N2}))
    entries = [
        Entry(Term(1), Index(1), EntryKind.NOOP, b""),
        Entry(Term(1), Index(2), EntryKind.CONFIG, conf.encode()),
        Entry(Term(1), Index(3), EntryKind.CONFIG, ConfState(frozenset({N1})).encode()),
    ]
    n = RaftNode(
        RaftConfig(N1), random.Random(0), 0, HardState(Term(1), N1, Index(2)),
        Snapshot(Index(0), Term(0), ConfState(frozenset({N1, N2, N3})), b""), entries,
    )  # fmt: skip
    assert n.conf == conf  # entry 3 is not committed, so not in effect
    assert [e.index for e in n.ready().committed] == [1, 2]
