"""The shard process: one complete Kafka broker endpoint (its own port and broker id) owning its partitions' logs.

Spawned by the supervisor (``process.run_shard`` is the entry point). From the wire inwards: ``shard`` (listener,
start/stop, the supervisor link), ``connection`` (one Kafka connection: framing, guard, dispatch; it sees the shard
only through ``connection.ConnectionHost``), ``kafka`` (one handler module per Kafka API), ``manager`` (the
partitions this shard holds, reconciled with the metadata image), ``replication`` (follower fetchers and the
leader's ISR loop), ``partition`` / ``producer_state`` / ``flusher`` (the per-partition core: log, high watermark,
idempotence, group commit), ``controller_link`` (the channel to this node's controller process), ``limits`` (the
fixed bounds; the operator's are in ``rafka_shards.config``). Crashes: the supervisor restarts it; what it
acknowledged is on disk (see docs/architecture.md).
"""
