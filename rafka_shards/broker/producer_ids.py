"""Producer id allocation for InitProducerId: unique ids across restarts, one fsync per block of ids.

Runs in a shard process. Ids are handed out from a block [next, limit); the block's end is persisted (written to a
temporary file, fsynced, renamed, directory fsynced) before any id of the block is given out, so a restart resumes
after the block and never repeats an id. With several shards (a later issue) blocks come from the controller, as in
Kafka's KIP-730; today one shard owns the file under its data directory.
"""

from __future__ import annotations

from pathlib import Path

from rafka_shards.storage.files import write_atomically

BLOCK_SIZE = 1000
PRODUCER_ID_MAX = 2**63 - 1


class ProducerIdAllocator:
    def __init__(self, path: Path) -> None:
        self._path = path
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            text = "0"
        if not text.isdigit():
            raise ValueError(f"{path}: expected the next free producer id, found {text[:40]!r}")
        self._next = int(text)
        self._limit = self._next  # nothing reserved yet in this incarnation

    def allocate(self) -> int:
        if self._next >= self._limit:
            limit = self._next + BLOCK_SIZE
            if limit > PRODUCER_ID_MAX:
                raise RuntimeError("producer ids exhausted")
            self._persist(limit)
            self._limit = limit
        pid = self._next
        self._next += 1
        return pid

    def _persist(self, limit: int) -> None:
        write_atomically(self._path, f"{limit}\n".encode())
