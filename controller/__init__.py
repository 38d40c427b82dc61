"""The metadata controller: a log of typed metadata commands and the pure state machine that applies them.

Runs inside the broker process in this version (a single-node quorum of one, persisted and fsynced);
a later version replicates the same log with Raft. Shards read metadata only through the image
produced by :mod:`controller.state`.
"""
