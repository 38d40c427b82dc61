"""The supervisor: the node's first process (``python -m rafka_shards serve``).

It binds every listener, spawns the controller process and one shard process per partition group, restarts those
that die, and resets connections to a dead shard's port until its next process is ready. It owns no data.
``supervisor`` is the asyncio shell; ``children`` the children's places and process waits; ``listeners`` the
sockets and the resets while a shard is down; ``restart_policy`` the sans-IO backoff and give-up rule. The
children's entry points are injected by ``rafka_shards.cli``: this package imports no other process package.
"""
