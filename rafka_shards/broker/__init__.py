"""The broker's partition-serving logic for one shard: partitions it leads, group commit, metadata reconciliation.

Runs in a shard process on its event loop. Sits between the Kafka handlers (``rafka_shards.kafka``) and the sans-IO
cores (``records``, ``storage``, ``controller``); knows nothing of sockets.
"""
