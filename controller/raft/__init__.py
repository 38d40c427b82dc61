"""The project's own Raft (Ongaro & Ousterhout 2014, and Ongaro's dissertation), built like etcd's raft library.

``node.RaftNode`` is a sans-IO state machine: messages, ticks carrying ``now_ms`` and proposals go in; a ``Ready``
comes out with what to persist FIRST (hard state, entries, a received snapshot), then the messages to send, then the
committed entries to apply. It owns no socket, file, clock or thread, so the deterministic simulation in
``tests/unit/raft_sim.py`` drives it through seeded network, disk and clock faults. Its parts, as etcd splits them:
``log`` (the entries, snapshot and commit index), ``tracker`` (the leader's view of its followers, votes and
quorums), ``read_only`` (ReadIndex reads) and ``membership`` (the configuration and its changes). ``types`` holds the
durable records, ``messages`` is the versioned binary wire format (safe on untrusted bytes), ``wal`` the fsynced
on-disk log. Why not raftos or pysyncobj: docs/raft.md.
"""
