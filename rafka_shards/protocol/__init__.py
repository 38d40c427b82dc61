"""The Kafka wire protocol, sans-IO: framing and headers, the pre-decode guard, kio-based codecs, fast encoders.

Runs in every shard process, on bytes it is handed: ``framing`` (frames and request headers), ``guard`` (length
prefixes checked before kio reads a body), ``kio_codec`` (request decoding, long-tail responses), ``fast_responses``
(Produce, Fetch and Metadata responses encoded by hand).
"""
