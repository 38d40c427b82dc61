"""The supervisor: the node's first process (``python -m rafka_shards serve``).

It binds every listener, spawns the controller process and one shard process per partition group, restarts those
that die, and resets connections to a dead shard's port until its next process is ready. It owns no data.
"""
