"""Kafka's record batches (magic v2), handled as whole batches: header parsing and CRC32C, building, compression.

Runs in any process; sans-IO. The produce and fetch paths touch a batch as one object (``batch``); ``builder``
(record by record, with ``compression``) is for tests, benchmarks and ListOffsets by timestamp.
"""
