"""The Kafka API layer of a shard: one handler module per API, each declaring its key and versions.

Runs in a shard process on its event loop. A handler decodes nothing itself (the connection hands it a kio request
object), checks each partition, routes it to the ``PartitionManager`` and puts an error code on each partition, as
Redpanda's handlers do. The registry built from the declarations answers ApiVersions.
"""
