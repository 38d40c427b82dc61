"""Producer id blocks survive restarts without repeating an id; atomic small-file writes."""

from __future__ import annotations

from pathlib import Path

from rafka_shards.broker.producer_ids import BLOCK_SIZE, ProducerIdAllocator
from rafka_shards.storage.files import write_atomically


def test_producer_ids_never_repeat_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "producer_id_block"
    first = ProducerIdAllocator(path)
    a = [first.allocate() for _ in range(3)]
    second = ProducerIdAllocator(path)  # a restart (or crash) after handing out a few ids of the block
    b = [second.allocate() for _ in range(BLOCK_SIZE + 2)]
    assert a == [0, 1, 2]
    assert b[0] == BLOCK_SIZE and len(set(a + b)) == len(a + b)


def test_write_atomically_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "f"
    write_atomically(target, b"one")
    write_atomically(target, b"two two")
    assert target.read_bytes() == b"two two"
    assert not (tmp_path / "f.tmp").exists()
