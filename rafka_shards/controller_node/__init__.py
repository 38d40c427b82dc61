"""The controller process: this node's Raft member and the shards' gateway to the metadata log.

Spawned by the supervisor (``process.run_controller`` is the entry point). ``raft_controller.RaftController`` puts
the Raft member together from ``backend`` (Ready and tick loops around the sans-IO ``controller.raft`` node: WAL,
apply, snapshots), ``frontend`` (proposals, reads, membership, heartbeats) with ``forwarder`` (requests to the
leader, ``controller.forwarding``), ``duties`` (the active controller's ``controller.leader_duties``, with
``broker_probe`` watching brokers' listeners), ``probe`` (metrics), ``leader_gone``, ``bootstrap`` and
``legacy_upgrade``; all timed by one injected ``clock``. ``raft_transport`` carries frames between controllers,
``channel_server`` serves this node's shards (``rafka_shards.ipc.channel``). It also hosts the HTTP admin API
(``rafka_shards.admin``). Crashes: the supervisor restarts it; the Raft log on disk brings it back.
"""
