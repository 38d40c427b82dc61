"""A shard's broker registration survives a Raft leadership change while it commits (found on a busy machine: an
election during a slow fsync answered the RegisterBroker "leadership moved before the entry committed; retry", and
the shard exited): it is proposed again, as a new incarnation, and other rejections still fail the start."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from controller.commands import Command, RegisterBroker
from controller.image import MetadataImage
from controller.state_machine import CommandRejected, Rejection, RejectKind, apply
from rafka_shards.config import load_config
from rafka_shards.model import ErrorCode, KafkaError
from rafka_shards.shard.flusher import GroupCommitFlusher
from rafka_shards.shard.manager import PartitionManager
from rafka_shards.shard.probe import Probe


class FlakyController:
    """Refuses the first ``failures`` proposals with ``kind``, then commits and applies each to the manager."""

    def __init__(self, manager: PartitionManager, failures: int, kind: RejectKind) -> None:
        self.manager = manager
        self.failures = failures
        self.kind = kind
        self.proposed: list[Command] = []

    async def propose(self, cmd: Command) -> int:
        self.proposed.append(cmd)
        if len(self.proposed) <= self.failures:
            raise CommandRejected(Rejection(self.kind, "leadership moved before the entry committed; retry"))
        image = self.manager.image
        offset = image.offset + 1
        self.manager.reconcile(apply(image, cmd, offset))
        return offset

    async def propose_topic(self, proposal: object) -> int:
        raise AssertionError("not used")


def _manager(tmp_path: Path) -> PartitionManager:
    config = load_config({"data_dir": str(tmp_path)}, environ={})
    clock = [0]
    return PartitionManager(
        config,
        MetadataImage(offset=0, cluster_id="c"),
        GroupCommitFlusher(1, interval_ms=None),
        lambda: 0,
        Probe(),
        lambda: clock[0],
    )


def test_registration_is_retried_when_leadership_moves(tmp_path: Path) -> None:
    manager = _manager(tmp_path)
    controller = FlakyController(manager, 2, RejectKind.CONTROLLER_UNAVAILABLE)
    manager.attach(controller)  # type: ignore[arg-type]
    asyncio.run(manager.register())
    assert len(controller.proposed) == 3
    incarnations = [c.incarnation for c in controller.proposed if isinstance(c, RegisterBroker)]
    assert len(set(incarnations)) == 3  # each attempt a new incarnation
    assert manager.image.brokers[manager.broker_id].incarnation == manager.incarnation == incarnations[-1]


def test_other_rejections_still_fail_the_registration(tmp_path: Path) -> None:
    manager = _manager(tmp_path)
    manager.attach(FlakyController(manager, 1, RejectKind.INVALID_REQUEST))  # type: ignore[arg-type]
    with pytest.raises(KafkaError) as raised:
        asyncio.run(manager.register())
    assert raised.value.code is ErrorCode.INVALID_REQUEST
