"""The metadata controller's pure core: typed metadata commands, the image, and the state machine that applies them.

Imports nothing of ``rafka_shards``; does no I/O of its own but small durable-file helpers (``files``, the
pre-Raft ``metadata_log``). The commands are replicated by the project's own Raft (``controller.raft``), driven in
the controller process by ``rafka_shards.controller_node``; the active controller's lease and liveness rules are
``leases`` and ``liveness``, new partitions are placed by ``placement``. Every process reads metadata only through a
``controller.image.MetadataImage`` made by ``controller.state_machine.apply``: the controller process applies the
committed log, each shard applies the same records it receives over its controller channel.
"""
