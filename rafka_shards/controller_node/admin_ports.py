"""The controller process's objects as the admin API's ports (``rafka_shards.admin.ports``): the one place that
knows both, so the admin package imports nothing of this one.

Runs in the controller process. ``RaftController`` reads and proposes as the admin API needs already; the quorum
view adapts what it keeps elsewhere (the transport's counters, the active controller's lease table) and turns
``ControllerUnavailable`` into the ``CommandRejected`` (``CONTROLLER_UNAVAILABLE``) the admin API answers 503 to.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from controller.balancer import BalancerStatus
from controller.raft.node import ConfChangeOp, Status
from controller.state_machine import CommandRejected, Rejection, RejectKind
from rafka_shards.admin.ports import AdminPorts, AdminSecurity, Histogram, NodeView
from rafka_shards.config import BrokerConfig
from rafka_shards.controller_node.channel_server import ControllerServer
from rafka_shards.controller_node.raft_controller import ControllerUnavailable, RaftController
from rafka_shards.security.client_security import inter_broker_security


class QuorumPort:
    """``rafka_shards.admin.ports.Quorum`` over this node's ``RaftController``."""

    def __init__(self, controller: RaftController) -> None:
        self._controller = controller

    def status(self) -> Status:
        return self._controller.status()

    @property
    def applied_offset(self) -> int:
        return self._controller.applied_offset

    @property
    def leader_changes(self) -> int:
        return self._controller.leader_changes

    @property
    def fsync_seconds(self) -> Histogram:
        return self._controller.fsync_seconds

    @property
    def dropped_frames(self) -> Mapping[str, int]:
        return self._controller.transport.dropped

    def links(self) -> dict[str, dict[str, object]]:
        return self._controller.transport.links()

    @property
    def judges_leases(self) -> bool:
        return self._controller.leases is not None

    def lease_remaining_ms(self, broker_id: int) -> int | None:
        leases = self._controller.leases
        assert leases is not None, "only while judges_leases"
        return leases.remaining_ms(broker_id, self._controller.now_ms())

    def balancer_status(self) -> BalancerStatus:
        core = self._controller.duties.core
        return core.balancer.status(self._controller.image, self._controller.now_ms(), active=core.active)

    async def add_voter(self, node_id: int) -> None:
        try:
            await self._controller.add_voter(node_id)
        except ControllerUnavailable as e:
            raise CommandRejected(Rejection(RejectKind.CONTROLLER_UNAVAILABLE, str(e))) from None

    async def remove_voter(self, node_id: int) -> int:
        try:
            return await self._controller.change_membership(ConfChangeOp.REMOVE, node_id)
        except ControllerUnavailable as e:
            raise CommandRejected(Rejection(RejectKind.CONTROLLER_UNAVAILABLE, str(e))) from None


def admin_ports(
    config: BrokerConfig,
    node: NodeView,
    controller: RaftController,
    server: ControllerServer,
    metrics_dir: Path,
    security: AdminSecurity,
) -> AdminPorts:
    """What ``rafka_shards.admin.app.start_admin`` is given in this process."""
    return AdminPorts(
        metadata=controller,
        proposer=server,
        node=node,
        quorum=QuorumPort(controller),
        metrics_dir=metrics_dir,
        data_dir=config.data_dir,
        default_partitions=config.default_partitions,
        default_replication_factor=config.default_replication_factor,
        security=security,
        inter_broker=inter_broker_security(config),
    )
