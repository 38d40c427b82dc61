"""The local metadata log: length- and CRC-framed commands, each fsynced before it is acknowledged.

Runs in the process that owns the controller directory. Record format: ``[u32 length][u32 crc32c(payload)][payload]``
with payload = ``encode_command``. Opening replays the file; a torn or corrupt tail (a crash mid-append) is cut off
and the cut fsynced. A record longer than ``RECORD_BYTES_MAX`` is treated as corruption without allocating it.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import crc32c

from controller.commands import Command, CommandDecodeError, decode_command, encode_command
from controller.files import fsync_dir

RECORD_BYTES_MAX = 1024 * 1024
_FRAME = struct.Struct(">II")


class MetadataLog:
    def __init__(self, path: Path, fd: int, records: list[bytes], end: int) -> None:
        self.path = path
        self._fd = fd
        self._records = records  # payloads, replayed once at open; metadata is small
        self._end = end

    @classmethod
    def open(cls, directory: Path) -> MetadataLog:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "metadata.log"
        created = not path.exists()
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if created:
            fsync_dir(directory)
        data = os.pread(fd, os.fstat(fd).st_size, 0)
        records: list[bytes] = []
        pos = 0
        while len(data) - pos >= _FRAME.size:
            length, crc = _FRAME.unpack_from(data, pos)
            if length > RECORD_BYTES_MAX or len(data) - pos - _FRAME.size < length:
                break
            payload = data[pos + _FRAME.size : pos + _FRAME.size + length]
            if crc32c.crc32c(payload) != crc:
                break
            try:
                decode_command(payload)
            except CommandDecodeError:
                break
            records.append(payload)
            pos += _FRAME.size + length
        if pos != len(data):
            os.ftruncate(fd, pos)
            os.fsync(fd)
        return cls(path, fd, records, pos)

    def __len__(self) -> int:
        return len(self._records)

    def append(self, cmd: Command) -> int:
        payload = encode_command(cmd)
        assert len(payload) <= RECORD_BYTES_MAX, len(payload)
        record = _FRAME.pack(len(payload), crc32c.crc32c(payload)) + payload
        os.pwrite(self._fd, record, self._end)
        os.fsync(self._fd)
        self._end += len(record)
        self._records.append(payload)
        return len(self._records) - 1

    def payloads(self, offset: int, count_max: int) -> list[bytes]:
        """Up to ``count_max`` encoded commands from ``offset`` on (every one already fsynced)."""
        return self._records[offset : offset + count_max]

    def read_from(self, offset: int) -> Iterator[tuple[int, Command]]:
        for i in range(offset, len(self._records)):
            yield i, decode_command(self._records[i])

    def close(self) -> None:
        os.close(self._fd)
