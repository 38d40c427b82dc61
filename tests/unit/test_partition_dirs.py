"""Node start-up removes partition directories of deleted topics, and nothing a shard holds or still needs."""

from __future__ import annotations

import fcntl
import os
import uuid
from pathlib import Path

from controller.commands import CreateTopic, RegisterBroker
from controller.image import MetadataImage
from controller.state_machine import apply
from rafka_shards.storage.partition_dirs import LOCK_FILE, PARTITION_METADATA_FILE, remove_stray_partition_dirs


def _dir(kafka: Path, name: str, topic_id: uuid.UUID | None) -> Path:
    d = kafka / name
    d.mkdir(parents=True)
    (d / LOCK_FILE).touch()
    if topic_id is not None:
        (d / PARTITION_METADATA_FILE).write_text(f"version: 0\ntopic_id: {topic_id}\n")
    return d


def test_only_unlocked_directories_of_unknown_topics_or_ids_are_removed(tmp_path: Path) -> None:
    live_id = uuid.uuid4()
    image = MetadataImage(offset=-1, cluster_id="c")
    image = apply(image, RegisterBroker(0, "127.0.0.1", 9092, None, "i"), 0)
    image = apply(image, CreateTopic("live", live_id, ((0,), (0,)), ()), 1)
    kafka = tmp_path / "kafka"
    keep = [
        _dir(kafka, "live-0", live_id),
        _dir(kafka, "live-1", None),  # no marker yet: a shard is creating it
        _dir(kafka, "live-0x", None),  # not a partition directory
    ]
    gone = [
        _dir(kafka, "live-2", live_id),  # beyond the topic's partitions
        _dir(kafka, "deleted-0", uuid.uuid4()),  # topic no longer exists
    ]
    held = _dir(kafka, "held-0", uuid.uuid4())
    fd = os.open(held / LOCK_FILE, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a running shard holds it: never touched
    try:
        removed = remove_stray_partition_dirs(kafka, image)
    finally:
        os.close(fd)
    assert sorted(removed) == sorted(gone)
    assert all(d.exists() for d in [*keep, held])
    assert not any(d.exists() for d in gone)
