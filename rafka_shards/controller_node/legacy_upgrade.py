"""The upgrade from the single-node, pre-Raft metadata log (``controller.metadata_log``) to the Raft quorum.

Runs once, in the controller process, when a node whose data directory still holds ``controller/metadata.log``
opens a Raft log that does not exist yet: the old log's state becomes the quorum's starting point (the image in
the bootstrap snapshot at index 0, ``bootstrap.bootstrap_snapshot``). The old files are only read.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import orjson

from controller.image import MetadataImage
from controller.metadata_log import MetadataLog
from controller.state_machine import apply

LEGACY_LOG = "metadata.log"
LEGACY_META = "cluster.json"


def has_legacy_log(directory: Path) -> bool:
    return (directory / LEGACY_LOG).exists()


def upgrade_image(directory: Path, image: MetadataImage) -> MetadataImage:
    """``image`` with the legacy log of ``directory`` applied (and its cluster id, if it kept one), at offset 0."""
    meta = directory / LEGACY_META
    if meta.exists():
        image = MetadataImage(offset=0, cluster_id=str(orjson.loads(meta.read_bytes())["cluster_id"]))
    old = MetadataLog.open(directory)
    try:
        for offset, cmd in old.read_from(0):
            image = apply(image, cmd, offset)
    finally:
        old.close()
    return dataclasses.replace(image, offset=0)
