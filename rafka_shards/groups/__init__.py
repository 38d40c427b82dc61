"""Consumer groups (issue 16): the sans-IO parts of the group coordinator, shared by the shards that lead partitions
of ``__consumer_offsets``. No asyncio here."""
