"""rafka_shards: a streaming broker in Python that speaks the Apache Kafka wire protocol."""

__version__ = "0.1.0"
