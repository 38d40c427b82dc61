"""The controller process: this node's Raft member and the shards' gateway to the metadata log.

Spawned by the supervisor (``process.run_controller`` is the entry point). ``raft_controller`` drives the sans-IO
``controller.raft`` node (Ready loop, WAL, snapshots, proposals from other nodes), ``raft_transport`` carries Raft
messages between nodes, ``channel_server`` serves this node's shards (``rafka_shards.ipc.channel``),
``broker_probe`` watches brokers' listeners for the active controller. It also hosts the HTTP admin API
(``rafka_shards.admin``). Crashes: the supervisor restarts it; the Raft log on disk brings it back.
"""
