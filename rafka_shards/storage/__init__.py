"""A partition's data on disk: segments, the log over them, producer snapshots, the partition-directory layout.

Runs in the shard process that holds the partition (``partition_dirs``' stray removal also in the controller process);
synchronous file I/O, no asyncio. ``segment`` (one ``.log`` with its indexes), ``log`` (ordered segments, recovery,
retention, flush jobs), ``producer_snapshots`` (the files), ``partition_dirs`` (naming, topic-id marker, lock),
``config`` (per-partition settings and the layer's limits).
"""
