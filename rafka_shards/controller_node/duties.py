"""The asyncio shell of the active controller's duties (``controller.leader_duties`` decides what to propose).

Runs in the controller process. Every tick of the backend it tells the core whether this node is the active
controller (it leads and has applied an entry of its own term) and proposes what the core returns, each in a
background task that logs the outcome and then reports it ``done``. While active it keeps exactly one liveness
probe task (``broker_probe``) per registered, unfenced broker, restarted with each activation. Broker heartbeats
that reach this node are judged here when it is active (``heartbeat_local``).

It also fences a broker whose shard process this node's supervisor saw die (``broker_died``), on any node: the
proposal goes through the frontend, so a follower forwards it to the leader.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from controller.balancer import BalancerSettings
from controller.commands import Command, FenceBroker
from controller.image import MetadataImage
from controller.leader_duties import LeaderDuties, Proposal
from controller.leases import HeartbeatReply
from controller.liveness import ProbeOutcome, ProbeTarget
from controller.raft.node import RaftNode, Role
from controller.state_machine import CommandRejected
from rafka_shards.config import BrokerConfig, PartitionBalancerMode
from rafka_shards.controller_node.broker_probe import probe_broker
from rafka_shards.controller_node.clock import Clock
from rafka_shards.security.client_security import inter_broker_security

log = logging.getLogger(__name__)


class DutiesRunner:
    def __init__(
        self,
        config: BrokerConfig,
        node: RaftNode,
        image: Callable[[], MetadataImage],
        propose: Callable[[Command], Awaitable[int]],
        clock: Clock,
        on_fatal: Callable[[asyncio.Task[None]], None],
    ) -> None:
        balancer = BalancerSettings(
            enabled=config.partition_balancer is PartitionBalancerMode.CONTINUOUS,
            node_unavailable_timeout_ms=config.node_unavailable_timeout_ms,
            moves_max=config.partition_balancer_moves_max,
            tick_interval_ms=config.partition_balancer_tick_ms,
        )
        self.core = LeaderDuties(config.broker_session_timeout_ms, balancer=balancer)
        self._config = config
        self._security = inter_broker_security(config)  # the probes connect to the brokers' inter-broker listener
        self._node = node
        self._image = image
        self._propose = propose
        self._clock = clock
        self._on_fatal = on_fatal
        self._probe_tasks: dict[ProbeTarget, asyncio.Task[None]] = {}  # one per registered, unfenced broker
        self._probes_activation = 0  # the core's activation the probe tasks belong to
        self._fencing: set[int] = set()  # brokers whose death this node reported and is fencing
        self._background: set[asyncio.Task[None]] = set()

    def tick(self, now_ms: int) -> None:
        node, image = self._node, self._image()
        active = node.role == Role.LEADER and node.term_at(image.offset) == node.term
        for proposal in self.core.tick(image, now_ms, node.term if active else None):
            self._run(proposal)
        self._run_probes(image)

    def heartbeat_local(self, broker_id: int, incarnation: str, metadata_offset: int) -> HeartbeatReply | None:
        """The reply when this node is the active controller, else None (the caller forwards to the leader)."""
        if self._node.role != Role.LEADER:
            return None
        now_ms = int(self._clock())
        judged = self.core.heartbeat(self._image(), broker_id, incarnation, metadata_offset, now_ms)
        if judged is None:
            return None
        reply, proposals = judged
        for proposal in proposals:
            self._run(proposal)
        return reply

    def broker_died(self, broker_id: int, why: str) -> None:
        """This node's supervisor saw broker ``broker_id``'s shard process exit: fence its registered incarnation
        now (through the leader) rather than when its session times out. Idempotent while the fence is pending."""
        reg = self._image().brokers.get(broker_id)
        if reg is None or reg.fenced or broker_id in self._fencing:
            return
        self._fencing.add(broker_id)
        log.warning("broker %d %s: fencing it", broker_id, why)
        self._in_background(FenceBroker(broker_id, reg.incarnation), lambda: self._fencing.discard(broker_id))

    def _run(self, proposal: Proposal) -> None:
        if isinstance(proposal.command, FenceBroker):
            log.warning("%s: fencing it", proposal.why)
        self._in_background(proposal.command, lambda: self.core.done(proposal))

    def _in_background(self, cmd: Command, done: Callable[[], None]) -> None:
        """A proposal of this node's own (fencing, draining): logged either way, then ``done``."""

        async def run() -> None:
            try:
                offset = await self._propose(cmd)
                log.info("%s committed at offset %d", cmd, offset)
            except CommandRejected as e:
                log.info("%s not committed: %s", cmd, e)
            finally:
                done()

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ---- liveness probes (controller.liveness): fence a broker whose node is gone without waiting for its session

    def _run_probes(self, image: MetadataImage) -> None:
        """Exactly one probe task per registered, unfenced broker while this node is the active controller."""
        if self._probes_activation != self.core.activation or not self.core.active:
            self._stop_probes()
            self._probes_activation = self.core.activation
        interval_ms = self._config.broker_probe_interval_ms
        if not self.core.active or interval_ms <= 0:
            return
        wanted = set(self.core.probe_targets(image, self._config.node_id))
        for target in [t for t in self._probe_tasks if t not in wanted]:
            self._probe_tasks.pop(target).cancel()
        loop = asyncio.get_running_loop()
        for target in wanted - set(self._probe_tasks):
            task = loop.create_task(
                probe_broker(
                    target, interval_ms, self._config.broker_probe_timeout_ms, self._probe_seen, self._security
                ),
                name=f"probe-broker-{target.broker_id}",
            )
            task.add_done_callback(self._on_fatal)
            self._probe_tasks[target] = task

    def _stop_probes(self) -> None:
        for task in self._probe_tasks.values():
            task.cancel()
        self._probe_tasks.clear()

    def _probe_seen(self, target: ProbeTarget, outcome: ProbeOutcome) -> None:
        for proposal in self.core.probe_seen(self._image(), target, outcome, int(self._clock())):
            self._run(proposal)

    async def close(self) -> None:
        self._stop_probes()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
