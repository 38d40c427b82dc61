"""The on-disk layout of partition directories: naming, parsing, the topic-id marker, the lock, stray removal.

Runs in the shard processes (each claims and releases the directories of the partitions it holds) and in the
controller process (stray removal at node start). Owns nothing in memory. Under ``data_dir``:

- ``controller/``: the metadata log (the controller process's; not described here).
- ``kafka/<topic>-<partition>/``: one partition's segments (``rafka_shards.storage.log``), a ``partition.metadata``
  file naming the topic id (as Kafka does since KIP-516, so data of a deleted topic is never served under a
  re-created topic of the same name) and a ``.lock`` held with flock by the one process that serves it. Several
  shards of a node share ``kafka/``; a node holds at most one replica of a partition.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import uuid
from collections.abc import Set
from pathlib import Path

from controller.files import write_atomically
from controller.image import MetadataImage
from rafka_shards.model import TopicPartition, topic_name_error

log = logging.getLogger(__name__)

KAFKA_DIR = "kafka"
PARTITION_METADATA_FILE = "partition.metadata"
LOCK_FILE = ".lock"


class PartitionLocked(Exception):
    """Another process holds the partition's directory."""


def kafka_dir(data_dir: Path) -> Path:
    """The directory holding every partition directory of the node."""
    return data_dir / KAFKA_DIR


def partition_dir(kafka: Path, tp: TopicPartition) -> Path:
    # The name was validated against Kafka's rule before it entered the metadata log; assert it again here,
    # right before it becomes a path.
    assert topic_name_error(tp.topic) is None, tp.topic
    return kafka / f"{tp.topic}-{tp.partition}"


def parse_partition_dir(name: str) -> TopicPartition | None:
    """The partition a directory name stands for; None for a name that is not ``<topic>-<partition>``."""
    topic, sep, part = name.rpartition("-")
    if not sep or not part.isdigit():
        return None
    try:
        return TopicPartition(topic, int(part))
    except ValueError:  # a digit int() does not read (superscripts): not one of ours
        return None


def claim_partition_dir(kafka: Path, tp: TopicPartition, topic_id: uuid.UUID) -> tuple[Path, int]:
    """Create or reuse ``tp``'s directory for topic ``topic_id`` and lock it; the directory and the lock's fd.

    A directory holding data of another topic id (a deleted topic of the same name) is removed first. Raises
    PartitionLocked when another process holds the lock.
    """
    directory = partition_dir(kafka, tp)
    marker = directory / PARTITION_METADATA_FILE
    if directory.exists():
        recorded = read_topic_id(directory)
        if recorded != topic_id:
            log.warning("removing %s: it holds data of topic id %s, not %s", directory, recorded, topic_id)
            shutil.rmtree(directory)
    fresh = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    lock_fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock_fd)
        raise PartitionLocked(
            f"{directory} is locked by another process (another shard of this node holds a replica of {tp}: "
            "metadata written before replicas were kept on distinct nodes)"
        ) from None
    if fresh:
        write_atomically(marker, f"version: 0\ntopic_id: {topic_id}\n".encode())
    return directory, lock_fd


def release_partition_dir(directory: Path, lock_fd: int, *, delete: bool) -> None:
    """Give up a claimed directory (its log already closed): unlock it, and delete it when ``delete``."""
    os.close(lock_fd)
    if delete:
        shutil.rmtree(directory, ignore_errors=True)


def read_topic_id(directory: Path) -> uuid.UUID | None:
    """The topic id in a partition directory's marker; None if it has none (yet) or it does not parse."""
    with contextlib.suppress(OSError, ValueError):
        for line in (directory / PARTITION_METADATA_FILE).read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "topic_id":
                return uuid.UUID(value.strip())
    return None


def remove_stray_partition_dirs(kafka: Path, image: MetadataImage, local_brokers: Set[int] = frozenset()) -> list[Path]:
    """Delete partition directories of topics that no longer exist (a crash between DeleteTopic and the owning
    shard's cleanup), and, when ``local_brokers`` (this node's broker ids) are given, of partitions none of them is a
    replica of any more (moved away while the node was down: the partition balancer re-creates a gone node's
    replicas elsewhere, Kafka's stray logs); the ones removed.

    Runs in the controller process at node start, once it has caught up with the quorum and before any shard is
    spawned: a running shard may be behind or ahead of another in the metadata log, so only a moment when no shard
    runs can tell a stray directory from one a shard just created. A replica that is not in a partition's replica
    list is in no ISR, so no acknowledged record depends on its copy; if the partition comes back to this node
    later, it does so as a new replica that copies the log from the leader. A directory whose lock is held is
    skipped all the same.
    """
    removed: list[Path] = []
    if not kafka.is_dir():
        return removed
    for entry in os.scandir(kafka):
        if not entry.is_dir():
            continue
        tp = parse_partition_dir(entry.name)
        if tp is None:
            continue
        t = image.topics.get(tp.topic)
        why = "its topic no longer exists"
        if t is not None and tp.partition < len(t.partitions):
            recorded = read_topic_id(Path(entry.path))
            if recorded is None or recorded == t.topic_id:
                if not local_brokers or not local_brokers.isdisjoint(t.partitions[tp.partition].replicas):
                    continue
                why = "none of this node's brokers is a replica of it any more"
        if _locked(Path(entry.path) / LOCK_FILE):
            continue
        log.info("removing %s: %s", entry.path, why)
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(Path(entry.path))
    return removed


def _locked(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
