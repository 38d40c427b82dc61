"""The active controller's own duties, sans-IO: broker leases, fencing, liveness-probe verdicts and draining.

Runs in the controller process of every node, but acts only while that node is the *active* controller: it leads
the Raft quorum and has applied an entry of its own term (so everything an earlier leader committed is in the image
it judges by). Pure: the asyncio shell (``rafka_shards.controller_node.duties``) passes the applied image and
``now_ms`` from its one monotonic clock, proposes the commands it gets back, and calls ``done`` when each proposal
committed or failed. Nothing here is replicated.

- Each activation (a new term, or leading again) starts a new ``controller.leases.BrokerLeases``, which gives every
  registered broker a full session timeout from that moment (a leader change never fences a broker that kept
  heartbeating), and a new ``controller.liveness.BrokerProbes``. A proposal of an earlier activation that finishes
  later releases nothing of the current one.
- Leases: an unfenced broker whose lease ended is fenced (``FenceBroker``); a fenced one that heartbeats again and
  has caught up is unfenced (``UnfenceBroker``). Each is proposed once until ``done``.
- Probes: a refused connection to a broker's listener fences its incarnation at once (``controller.liveness``).
- Balancing: the partition balancer (``controller.balancer``) watches fences on every node and, while active,
  proposes replica moves and leader elections; its state outlives activations like draining's.
- Draining: every ``drain_interval_ms`` at most ``drain_moves_max`` reassignments move replicas off decommissioning
  brokers (``controller.placement.drain_moves``). Draining state outlives activations, so a reassignment still being
  proposed by an earlier term is not proposed twice.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from controller.balancer import BalancerSettings, PartitionBalancer
from controller.commands import Command, ElectLeader, FenceBroker, ReassignPartition, UnfenceBroker
from controller.image import MetadataImage
from controller.leases import BrokerLeases, HeartbeatReply
from controller.liveness import BrokerProbes, ProbeOutcome, ProbeTarget
from controller.placement import drain_moves

DRAIN_INTERVAL_MS = 1000  # how often the active controller looks for replicas to move off decommissioning brokers
DRAIN_MOVES_MAX = 32  # reassignments it has in flight at once


class Duty(enum.Enum):
    LEASE = "lease"  # a fence for an expired session, or the unfence of a broker that caught up
    PROBE = "probe"  # a fence for a broker whose node refuses connections
    DRAIN = "drain"  # a reassignment off a decommissioning broker
    BALANCE = "balance"  # the partition balancer's reassignment or election


@dataclass(frozen=True, slots=True)
class Proposal:
    """A command the active controller proposes of its own accord; pass it back to ``LeaderDuties.done``."""

    duty: Duty
    command: Command
    activation: int  # the activation that decided it
    why: str  # for the log


class LeaderDuties:
    def __init__(
        self,
        session_timeout_ms: int,
        drain_interval_ms: int = DRAIN_INTERVAL_MS,
        drain_moves_max: int = DRAIN_MOVES_MAX,
        balancer: BalancerSettings | None = None,
    ) -> None:
        assert session_timeout_ms > 0 and drain_interval_ms > 0 and drain_moves_max > 0
        self.session_timeout_ms = session_timeout_ms
        self._drain_interval_ms = drain_interval_ms
        self._drain_moves_max = drain_moves_max
        self.leases: BrokerLeases | None = None  # with ``probes``: only while active
        self.probes: BrokerProbes | None = None
        self.active_term: int | None = None
        self.activation = 0  # counts activations
        self._draining: set[tuple[str, int]] = set()  # partitions whose reassignment is being proposed
        self._next_drain_ms = 0
        self.balancer = PartitionBalancer(balancer or BalancerSettings())

    @property
    def active(self) -> bool:
        return self.leases is not None

    def tick(self, image: MetadataImage, now_ms: int, active_term: int | None) -> list[Proposal]:
        """Time passed. ``active_term`` is the term this node leads and has applied an entry of, None when it is not
        the active controller (then nothing is judged and the leases and probes are forgotten)."""
        self.balancer.observe(image, now_ms)
        if active_term is None:
            if self.leases is not None:
                self.balancer.deactivate()
            self.leases = self.probes = None
            self.active_term = None
            return []
        if self.leases is None or active_term != self.active_term:
            self.activation += 1
            self.active_term = active_term
            self.leases = BrokerLeases(self.session_timeout_ms, now_ms)
            self.probes = BrokerProbes()
        timeout = self.session_timeout_ms
        out = [
            Proposal(
                Duty.LEASE, fence, self.activation, f"broker {fence.broker_id} missed its heartbeats for {timeout} ms"
            )
            for fence in self.leases.tick(image, now_ms)
        ]
        out += self._drain(image, now_ms)
        return out + [
            Proposal(Duty.BALANCE, cmd, self.activation, "balancing partitions")
            for cmd in self.balancer.tick(image, now_ms, self._draining)
        ]

    def _drain(self, image: MetadataImage, now_ms: int) -> list[Proposal]:
        if now_ms < self._next_drain_ms:
            return []
        self._next_drain_ms = now_ms + self._drain_interval_ms
        out = []
        for move in drain_moves(image, self._drain_moves_max - len(self._draining)):
            key = (move.topic, move.partition)
            if key not in self._draining:
                self._draining.add(key)
                out.append(Proposal(Duty.DRAIN, move, self.activation, "draining a decommissioning broker"))
        return out

    def heartbeat(
        self, image: MetadataImage, broker_id: int, incarnation: str, metadata_offset: int, now_ms: int
    ) -> tuple[HeartbeatReply, list[Proposal]] | None:
        """Renew ``broker_id``'s lease: the reply and what to propose, or None when this node is not active."""
        if self.leases is None:
            return None
        reply, unfence = self.leases.heartbeat(image, broker_id, incarnation, metadata_offset, now_ms)
        if unfence is None:
            return reply, []
        return reply, [Proposal(Duty.LEASE, unfence, self.activation, f"broker {broker_id} caught up")]

    def probe_targets(self, image: MetadataImage, local_node: int | None = None) -> list[ProbeTarget]:
        """Every broker to keep one liveness probe running for (none while not active; none of ``local_node``)."""
        return [] if self.probes is None else self.probes.targets(image, local_node)

    def probe_seen(
        self, image: MetadataImage, target: ProbeTarget, outcome: ProbeOutcome, now_ms: int
    ) -> list[Proposal]:
        """What a probe of ``target`` saw: a fence to propose when its node is gone (``controller.liveness``)."""
        if self.probes is None:
            return []
        fence = self.probes.observe(image, target, outcome, now_ms)
        if fence is None:
            return []
        why = f"broker {fence.broker_id}'s node is gone (its port refuses connections)"
        return [Proposal(Duty.PROBE, fence, self.activation, why)]

    def done(self, proposal: Proposal) -> None:
        """``proposal`` committed or failed: it may be proposed again."""
        cmd = proposal.command
        if proposal.duty is Duty.DRAIN:
            assert isinstance(cmd, ReassignPartition)
            self._draining.discard((cmd.topic, cmd.partition))
            return
        if proposal.duty is Duty.BALANCE:
            assert isinstance(cmd, ReassignPartition | ElectLeader)
            self.balancer.done(cmd)
            return
        if proposal.activation != self.activation:
            return  # an earlier activation's: its leases and probes are gone
        assert isinstance(cmd, FenceBroker | UnfenceBroker)
        if proposal.duty is Duty.LEASE and self.leases is not None:
            self.leases.done(cmd.broker_id)
        elif proposal.duty is Duty.PROBE and self.probes is not None:
            self.probes.done(cmd.broker_id)
