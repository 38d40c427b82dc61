"""Each replica's batches read straight from a node's segment files, for the checker's on-disk comparison.

Runs in the bench's orchestrating process once the nodes are stopped (so no file changes under it). Uses the
broker's own batch scanner (``rafka_shards.records.batch.scan_for_recovery``: the walk a shard does at start-up, CRC
checked), over ``<data_dir>/kafka/<topic>-<partition>/<base offset>.log`` in offset order.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

from bench.chaos.checker import BatchSummary
from rafka_shards.records.batch import scan_for_recovery


def partition_batches(partition_dir: Path) -> list[BatchSummary]:
    """The batches of every segment of one partition directory, in offset order (a torn tail is left out)."""
    out: list[BatchSummary] = []
    for log in sorted(partition_dir.glob("*.log")):
        size = log.stat().st_size
        if not size:
            continue
        fd = os.open(log, os.O_RDONLY)
        try:
            with mmap.mmap(fd, size, prot=mmap.PROT_READ) as mm, memoryview(mm) as view:
                _, headers = scan_for_recovery(view)
        finally:
            os.close(fd)
        out.extend(BatchSummary(h.base_offset, h.last_offset, h.crc) for h in headers)
    return out


def read_replicas(
    data_dirs: dict[str, Path], topic: str, assignment: dict[int, list[str]]
) -> dict[int, dict[str, list[BatchSummary]]]:
    """partition -> replica name -> batches, for every replica the metadata assigns (``assignment``: partition ->
    names of the nodes holding it); a replica whose directory is missing has no batches."""
    out: dict[int, dict[str, list[BatchSummary]]] = {}
    for p, names in sorted(assignment.items()):
        for name in names:
            directory = data_dirs[name] / "kafka" / f"{topic}-{p}"
            out.setdefault(p, {})[name] = partition_batches(directory) if directory.is_dir() else []
    return out
