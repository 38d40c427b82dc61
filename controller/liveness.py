"""Liveness probes of the active controller: fence a broker at once when its node is gone.

Runs in the controller process of the node whose controller leads the Raft quorum, next to ``controller.leases``;
pure (``controller.leader_duties`` holds it; the asyncio shells ``rafka_shards.controller_node.duties`` and
``broker_probe`` do the connecting and pass ``now_ms`` and what they saw). Nothing here is replicated: a new
leader starts a new ``BrokerProbes`` and probes every broker at once.

Why: a broker's session (``controller.leases``) only ends ``broker_session_timeout_ms`` after its last heartbeat,
and until it is fenced every ISR it is in waits for it (acks=all stalls). But a process that dies closes its sockets
at once, and the kernel says so:

- a shard that dies while its node's supervisor lives: the supervisor sees the process sentinel and tells its
  controller process, which fences the broker (``ControllerHost.on_message``). The supervisor still owns the
  shard's listen socket, so a probe's connection is still *accepted* (it waits in the backlog for the restarted
  shard): the probe sees a timeout, never a refusal, and leaves it to the supervisor;
- a whole node that dies (supervisor, controller process and shards): its listen sockets are closed, so a connection
  to any of its brokers is *refused* (ECONNREFUSED). That is the one outcome this module acts on: the broker's
  current incarnation is fenced at once (KRaft would wait for the session).

What never fences here: a probe that times out or is not answered (a paused process, a network partition, a slow
broker) waits for the session timeout as before, so pauses and partitions under load do not cause false fencing. A
connection that closes (EOF, reset) is only a reason to reconnect at once: the reconnect tells refused from accepted.

A broker's advertised listener must be reachable from the controllers (followers fetch from it too): one refusing
connections is treated as dead. Probing is off with ``broker_probe_interval_ms = 0``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from controller.commands import FenceBroker
from controller.image import MetadataImage


class ProbeOutcome(enum.Enum):
    ANSWERED = "answered"  # the broker answered ApiVersions
    CLOSED = "closed"  # the connection ended (EOF or reset): reconnect at once
    REFUSED = "refused"  # the connection was refused: nothing listens on the broker's port
    TIMED_OUT = "timed_out"  # no answer in time (paused, partitioned, overloaded): the session decides


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    """What to probe: one incarnation of a registered, unfenced broker at its advertised listener."""

    broker_id: int
    incarnation: str
    host: str
    port: int


@dataclass(slots=True)
class _Seen:
    outcome: ProbeOutcome
    at_ms: int


class BrokerProbes:
    def __init__(self) -> None:
        self._seen: dict[ProbeTarget, _Seen] = {}
        self._in_flight: set[int] = set()  # brokers with a FenceBroker of ours not yet answered

    def targets(self, image: MetadataImage, local_node: int | None = None) -> list[ProbeTarget]:
        """Every registered, unfenced broker of another node than ``local_node``: the shell keeps exactly one probe
        running for each. The active controller's own node's shards are left out: its supervisor reports their
        deaths at once, and their advertised address need not be reachable from inside the node (a container
        that publishes its port under another number)."""
        wanted = [
            ProbeTarget(b, reg.incarnation, reg.host, reg.port)
            for b, reg in sorted(image.brokers.items())
            if not reg.fenced and (local_node is None or reg.node_id != local_node)
        ]
        keep = set(wanted)
        self._seen = {t: s for t, s in self._seen.items() if t in keep}  # bounded by the registered brokers
        return wanted

    def observe(
        self, image: MetadataImage, target: ProbeTarget, outcome: ProbeOutcome, now_ms: int
    ) -> FenceBroker | None:
        """What a probe of ``target`` saw; a FenceBroker to propose when its node is gone (see the module doc)."""
        self._seen[target] = _Seen(outcome, now_ms)
        if outcome is not ProbeOutcome.REFUSED:
            return None
        reg = image.brokers.get(target.broker_id)
        if reg is None or reg.fenced or reg.incarnation != target.incarnation:
            return None  # fenced already, or registered again since this probe started
        if target.broker_id in self._in_flight:
            return None
        self._in_flight.add(target.broker_id)
        return FenceBroker(target.broker_id, target.incarnation)

    def done(self, broker_id: int) -> None:
        """The fence proposed for ``broker_id`` was committed or refused: it may be proposed again."""
        self._in_flight.discard(broker_id)

    def last(self, target: ProbeTarget) -> tuple[ProbeOutcome, int] | None:
        """The last outcome seen for ``target`` and when (for logs and tests)."""
        seen = self._seen.get(target)
        return None if seen is None else (seen.outcome, seen.at_ms)
