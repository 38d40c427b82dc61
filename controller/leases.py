"""Broker leases, kept by the active controller (KRaft's BrokerHeartbeatManager).

Runs in the controller process of the node whose controller leads the Raft quorum, held by
``controller.leader_duties``; pure (the caller passes ``now_ms`` from a monotonic clock and proposes the commands it
returns). Nothing here is replicated: a new leader starts a new
``BrokerLeases``, which gives every registered broker a full session timeout from that moment, so a leader change
never fences a broker that kept heartbeating.

- A broker's lease runs ``session_timeout_ms`` from the last heartbeat this controller received. The broker counts
  its own lease from when it *sent* that heartbeat, so its lease always ends first: by the time the controller fences
  it, it has already stopped serving (``rafka_shards.shard.manager.PartitionManager.lease_valid``).
- An expired, unfenced broker is fenced (``FenceBroker``): its partitions move to another in-sync replica or become
  leaderless, with a new leader epoch.
- A fenced broker that heartbeats again is unfenced (``UnfenceBroker``) once its metadata has caught up to what this
  controller had applied when the broker was first heard from after its fencing, so it has seen its fencing (closed
  what it no longer leads) before it leads anything again.
- A controller whose own ticks stopped for half a session timeout (a paused process, a stalled VM) heard nothing
  meanwhile, which says nothing about the brokers: every lease is extended to a full session from now.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.commands import FenceBroker, UnfenceBroker
from controller.image import MetadataImage


@dataclass(frozen=True, slots=True)
class HeartbeatReply:
    fenced: bool  # the broker must not serve until a reply says otherwise
    message: str


class BrokerLeases:
    def __init__(self, session_timeout_ms: int, now_ms: int) -> None:
        assert session_timeout_ms > 0
        self.session_timeout_ms = session_timeout_ms
        self._expiry: dict[int, tuple[str, int]] = {}  # broker -> (incarnation heard from, lease end)
        self._catch_up: dict[int, int] = {}  # fenced broker -> metadata offset it must reach to be unfenced
        self._in_flight: set[int] = set()  # brokers with a fence/unfence proposal not yet answered
        self._last_tick_ms = now_ms

    def heartbeat(
        self, image: MetadataImage, broker_id: int, incarnation: str, metadata_offset: int, now_ms: int
    ) -> tuple[HeartbeatReply, UnfenceBroker | None]:
        """Renew ``broker_id``'s lease; the reply, and an UnfenceBroker to propose if it is fenced and caught up."""
        reg = image.brokers.get(broker_id)
        if reg is None or reg.incarnation != incarnation:
            return HeartbeatReply(True, f"broker {broker_id} is not registered with this incarnation"), None
        self._expiry[broker_id] = (incarnation, now_ms + self.session_timeout_ms)
        if not reg.fenced:
            self._catch_up.pop(broker_id, None)
            return HeartbeatReply(False, "ok"), None
        target = self._catch_up.setdefault(broker_id, image.offset)
        if metadata_offset < target:
            return HeartbeatReply(True, f"fenced; metadata offset {metadata_offset} must reach {target}"), None
        if broker_id in self._in_flight:
            return HeartbeatReply(True, "fenced; being unfenced"), None
        self._in_flight.add(broker_id)
        return HeartbeatReply(True, "fenced; being unfenced"), UnfenceBroker(broker_id, incarnation)

    def tick(self, image: MetadataImage, now_ms: int) -> list[FenceBroker]:
        """FenceBroker for every unfenced broker whose lease ended (each proposed once until ``done``)."""
        gap = now_ms - self._last_tick_ms
        self._last_tick_ms = now_ms
        timeout = self.session_timeout_ms
        if gap > timeout // 2:
            self._expiry = {b: (inc, max(end, now_ms + timeout)) for b, (inc, end) in self._expiry.items()}
        out = []
        for broker_id, reg in sorted(image.brokers.items()):
            if reg.fenced or broker_id in self._in_flight:
                continue
            incarnation, end = self._expiry.get(broker_id, ("", 0))
            if incarnation != reg.incarnation:
                # First sight of this registration (a new broker or incarnation, or this controller just took over).
                self._expiry[broker_id] = (reg.incarnation, now_ms + timeout)
            elif now_ms >= end:
                self._in_flight.add(broker_id)
                out.append(FenceBroker(broker_id, reg.incarnation))
        return out

    def done(self, broker_id: int) -> None:
        """The fence or unfence proposed for ``broker_id`` was committed or failed: it may be proposed again."""
        self._in_flight.discard(broker_id)

    def remaining_ms(self, broker_id: int, now_ms: int) -> int | None:
        """How long ``broker_id``'s lease still runs on this controller (None: not heard from yet)."""
        entry = self._expiry.get(broker_id)
        return None if entry is None else entry[1] - now_ms
