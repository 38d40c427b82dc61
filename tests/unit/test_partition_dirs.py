"""The partition-directory layout: names, the claim (marker and lock), and node start-up removing directories of
deleted topics, and nothing a shard holds or still needs."""

from __future__ import annotations

import fcntl
import os
import uuid
from pathlib import Path

import pytest

from controller.commands import CreateTopic, RegisterBroker
from controller.image import MetadataImage
from controller.state_machine import apply
from rafka_shards.model import TopicPartition
from rafka_shards.storage.partition_dirs import (
    LOCK_FILE,
    PARTITION_METADATA_FILE,
    PartitionLocked,
    claim_partition_dir,
    parse_partition_dir,
    partition_dir,
    read_topic_id,
    release_partition_dir,
    remove_stray_partition_dirs,
)


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


def test_at_node_start_the_copies_of_partitions_moved_away_are_removed(tmp_path: Path) -> None:
    topic_id = uuid.uuid4()
    image = MetadataImage(offset=-1, cluster_id="c")
    for b in (0, 10, 20):
        image = apply(image, RegisterBroker(b, "127.0.0.1", 9092 + b, None, f"i{b}", node_id=1 + b // 10), b)
    image = apply(image, CreateTopic("t", topic_id, ((0, 10), (10, 20)), ()), 30)
    kafka = tmp_path / "kafka"
    mine = _dir(kafka, "t-0", topic_id)  # broker 0 (this node) is a replica
    moved = _dir(kafka, "t-1", topic_id)  # brokers 10 and 20, on other nodes: re-created there while this one was down
    assert remove_stray_partition_dirs(kafka, image) == []  # without this node's brokers: only deleted topics
    assert remove_stray_partition_dirs(kafka, image, {0, 1}) == [moved]
    assert mine.exists() and not moved.exists()


def test_directory_names_parse_back_to_their_partition() -> None:
    tp = TopicPartition("my-topic.v2", 7)
    assert partition_dir(Path("/k"), tp) == Path("/k/my-topic.v2-7")
    assert parse_partition_dir("my-topic.v2-7") == tp
    assert parse_partition_dir("live-0x") is None
    assert parse_partition_dir("nodash") is None


def test_a_claimed_directory_is_marked_locked_and_replaced_when_its_topic_id_differs(tmp_path: Path) -> None:
    tp = TopicPartition("t", 0)
    old_id, new_id = uuid.uuid4(), uuid.uuid4()
    directory, fd = claim_partition_dir(tmp_path, tp, old_id)
    assert read_topic_id(directory) == old_id
    (directory / "00000000000000000000.log").touch()
    with pytest.raises(PartitionLocked):
        claim_partition_dir(tmp_path, tp, old_id)
    release_partition_dir(directory, fd, delete=False)
    directory, fd = claim_partition_dir(tmp_path, tp, new_id)  # a re-created topic of the same name
    assert read_topic_id(directory) == new_id
    assert not (directory / "00000000000000000000.log").exists()
    release_partition_dir(directory, fd, delete=True)
    assert not directory.exists()
