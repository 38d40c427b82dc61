"""The single-node controller: a quorum of one over the local metadata log.

Runs in the supervisor process (shards reach it through the controller channel, ``controller/channel.py``).
``propose`` validates, appends and fsyncs, then applies: when it returns, the command is durable and the new image
reflects it. The Raft controller (a later issue) replaces this class behind the same channel, so shards do not change
when the log becomes replicated.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import orjson

from controller.commands import Command
from controller.image import MetadataImage
from controller.metadata_log import MetadataLog
from controller.state_machine import Rejection, apply, validate


class CommandRejected(Exception):
    def __init__(self, rejection: Rejection) -> None:
        super().__init__(rejection.message)
        self.rejection = rejection


class LocalController:
    def __init__(self, log: MetadataLog, image: MetadataImage) -> None:
        self._log = log
        self._image = image

    @classmethod
    def open(cls, directory: Path, cluster_id: str | None = None) -> LocalController:
        directory.mkdir(parents=True, exist_ok=True)
        meta = directory / "cluster.json"
        if meta.exists():
            stored = orjson.loads(meta.read_bytes())["cluster_id"]
            if cluster_id is not None and cluster_id != stored:
                raise ValueError(f"{directory} belongs to cluster {stored}, not {cluster_id}")
            cluster_id = str(stored)
        else:
            cluster_id = cluster_id or str(uuid.uuid4())
            tmp = meta.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, orjson.dumps({"cluster_id": cluster_id}))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, meta)
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        log = MetadataLog.open(directory)
        image = MetadataImage(offset=-1, cluster_id=cluster_id)
        for offset, cmd in log.read_from(0):
            image = apply(image, cmd, offset)
        return cls(log, image)

    @property
    def image(self) -> MetadataImage:
        return self._image

    @property
    def log_end_offset(self) -> int:
        """The offset the next command will get; every record before it is fsynced."""
        return len(self._log)

    def payloads(self, offset: int, count_max: int) -> list[bytes]:
        return self._log.payloads(offset, count_max)

    def propose(self, cmd: Command) -> MetadataImage:
        rejection = validate(self._image, cmd)
        if rejection is not None:
            raise CommandRejected(rejection)
        offset = self._log.append(cmd)
        self._image = apply(self._image, cmd, offset)
        return self._image

    def close(self) -> None:
        self._log.close()
