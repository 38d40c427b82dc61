"""Kafka's compression codecs, for building and decoding batches off the hot path (the broker stores batches as
the producer compressed them and never recompresses).

Runs in any process; sans-IO. Snappy: the Java client writes xerial framing (magic b"\\x82SNAPPY\\x00", then
big-endian length-prefixed blocks); librdkafka reads both, and so does ``decompress``. Decompressed size is bounded
so a small batch cannot expand without limit.
"""

from __future__ import annotations

import gzip
import struct
import zlib

import lz4.frame
import snappy
import zstandard

from rafka_shards.model import ErrorCode, KafkaError
from rafka_shards.records.batch import Compression

DECOMPRESSED_BYTES_MAX = 64 * 1024 * 1024  # the records layer's one limit: a batch's payload after decompression
_XERIAL_MAGIC = b"\x82SNAPPY\x00"


def compress(codec: Compression, data: bytes) -> bytes:
    if codec is Compression.NONE:
        return data
    if codec is Compression.GZIP:
        return gzip.compress(data)
    if codec is Compression.SNAPPY:
        return bytes(snappy.compress(data))
    if codec is Compression.LZ4:
        return bytes(lz4.frame.compress(data))
    if codec is Compression.ZSTD:
        return zstandard.ZstdCompressor().compress(data)
    raise KafkaError(ErrorCode.UNSUPPORTED_COMPRESSION_TYPE, f"codec {codec}")


def _bounded(data: bytes) -> bytes:
    if len(data) > DECOMPRESSED_BYTES_MAX:
        raise KafkaError(ErrorCode.CORRUPT_MESSAGE, f"batch decompresses to more than {DECOMPRESSED_BYTES_MAX} bytes")
    return data


def decompress(codec: Compression, data: bytes) -> bytes:
    try:
        if codec is Compression.NONE:
            return data
        if codec is Compression.GZIP:
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out = d.decompress(data, DECOMPRESSED_BYTES_MAX + 1)
            return _bounded(out)
        if codec is Compression.SNAPPY:
            if data.startswith(_XERIAL_MAGIC):
                parts = []
                pos = 16  # magic + version + compatible version
                while pos < len(data):
                    (n,) = struct.unpack_from(">i", data, pos)
                    parts.append(_bounded(snappy.decompress(data[pos + 4 : pos + 4 + n])))
                    pos += 4 + n
                return _bounded(b"".join(parts))
            return _bounded(bytes(snappy.decompress(data)))
        if codec is Compression.LZ4:
            return _bounded(bytes(lz4.frame.decompress(data)))
        if codec is Compression.ZSTD:
            dctx = zstandard.ZstdDecompressor()
            return _bounded(dctx.decompressobj().decompress(data))
    except (OSError, ValueError, RuntimeError, struct.error, zlib.error, zstandard.ZstdError) as e:
        raise KafkaError(ErrorCode.CORRUPT_MESSAGE, f"cannot decompress {codec.name} batch: {e}") from None
    raise KafkaError(ErrorCode.UNSUPPORTED_COMPRESSION_TYPE, f"codec {codec}")
