"""Partition replication in a shard: followers fetch from their leaders, leaders keep their ISR right.

Runs in a shard process, on its event loop (Kafka's ReplicaFetcherManager and the ISR part of its Partition).

- One ``ReplicaFetcher`` per leader broker this shard follows partitions of: a Kafka client connection to that
  broker's inter-broker listener (TLS and a SASL login as that listener's protocol asks: ``security.client_security``)
  sending Fetch v15 with ``replica_state`` = (this broker, its broker epoch: the offset of its RegisterBroker record),
  so the leader can refuse a fetch from an earlier incarnation (KIP-903's broker epoch in Fetch). Before it fetches a
  partition whose leader or epoch changed, it asks the leader where their logs agree (OffsetForLeaderEpoch v3,
  KIP-101) and truncates what diverged. Fetched batches are validated, appended with the leader's offsets and epochs,
  and (under durability=fsync) fsynced before the next fetch reports them: the leader counts a follower's fetch offset
  as data on its disk. Errors back off and retry; a fetcher stops when this shard follows nothing of that leader.
- The ISR loop: every ``ISR_CHECK_INTERVAL_S`` each partition this shard leads compares its ISR with what its
  followers' fetches show (``Partition.wanted_isr``; fenced brokers never join) and proposes AlterPartition when it
  differs (one at a time per partition; one the controller refused waits ``ISR_RETRY_AFTER_REFUSAL_MS``).

The fetcher is the I/O shell (connection, loop, back-off, waiting for fsync); what a request holds and what a
response does to the partitions (append, truncate, start over, retry) is ``rafka_shards.shard.follower``, which has
no socket. Both see the partition manager only through the narrow Protocols declared here (``ReplicationHost``,
``FetcherHost``), the flusher through ``DirtyMarker``; the Kafka client is ``rafka_shards.ipc.kafka_client``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Protocol

from kio.schema.fetch.v15.response import FetchResponse
from kio.schema.offset_for_leader_epoch.v3.response import OffsetForLeaderEpochResponse

from controller.commands import AlterPartition, Command
from controller.image import MetadataImage
from rafka_shards import event_loop
from rafka_shards.config import BrokerConfig, Durability
from rafka_shards.ipc.kafka_client import Failure, KafkaClient, KafkaClientError
from rafka_shards.model import ErrorCode, KafkaError, TopicPartition
from rafka_shards.security.client_security import ClientSecurity, inter_broker_security
from rafka_shards.shard import follower
from rafka_shards.shard.limits import (
    BACKOFF_MAX_S,
    BACKOFF_MIN_S,
    ISR_CHECK_INTERVAL_S,
    ISR_FATE_UNKNOWN_MS,
    ISR_RETRY_AFTER_REFUSAL_MS,
    RESPONSE_BYTES_SLACK,
)
from rafka_shards.shard.partition import Partition

log = logging.getLogger(__name__)

_CLIENT_ID = "rafka-replica-fetcher"


class FetchFailed(Exception):
    """The leader is not registered or cannot serve some partitions yet: reconnect after a backoff (as after a
    ``KafkaClientError``: the leader could not be reached or answered nonsense)."""


class FetcherHost(Protocol):
    """What a replica fetcher needs of the shard's partition manager (``shard.manager.PartitionManager``)."""

    @property
    def partitions(self) -> Mapping[TopicPartition, Partition]:
        """This shard's copies of the partitions it holds (led or followed)."""
        ...

    @property
    def image(self) -> MetadataImage:
        """The metadata image this shard has reconciled with (where each leader broker listens)."""
        ...

    @property
    def broker_id(self) -> int: ...

    @property
    def broker_epoch(self) -> int:
        """This incarnation's broker epoch, sent in every Fetch (KIP-903); -1 before it registered."""
        ...

    def now_ms(self) -> int:
        """Wall-clock milliseconds (record timestamps, segment rolling)."""
        ...


class ReplicationHost(FetcherHost, Protocol):
    """What the ISR loop needs besides: the lease, a monotonic clock and a way to commit AlterPartition."""

    def monotonic_ms(self) -> int: ...

    def lease_valid(self) -> bool:
        """The controller's lease on this broker still runs: it may lead partitions and propose ISR changes."""
        ...

    async def propose(self, cmd: Command) -> MetadataImage:
        """Commit ``cmd`` through the controller; returns once applied here; raises ``KafkaError`` if refused."""
        ...


class DirtyMarker(Protocol):
    """The shard's group-commit flusher (``shard.flusher.GroupCommitFlusher``), told of every replicated append."""

    def mark_dirty(self, p: Partition) -> None: ...


class Replication:
    """The fetchers of the partitions this shard follows (one per leader broker) and the ISR loop of those it leads."""

    def __init__(self, manager: ReplicationHost, config: BrokerConfig, flusher: DirtyMarker) -> None:
        self.manager = manager
        self.config = config
        self.flusher = flusher
        self.security = inter_broker_security(config)  # the leaders' inter-broker listener: TLS and SASL login
        self._fetchers: dict[int, ReplicaFetcher] = {}
        self._isr_tasks: set[asyncio.Task[None]] = set()
        # Shared by every fetcher of this shard: the new replicas of reassignments copy at most this fast together.
        self.recovery = follower.RecoveryThrottle(config.reassignment_max_bytes_per_second, manager.monotonic_ms())

    def reconcile(self, partitions: Mapping[TopicPartition, Partition]) -> None:
        """Start, update and stop fetchers so that every followed partition with a leader is fetched."""
        by_leader: dict[int, set[TopicPartition]] = {}
        for tp, p in partitions.items():
            if not p.is_leader and p.leader >= 0:
                by_leader.setdefault(p.leader, set()).add(tp)
        for leader in [b for b in self._fetchers if b not in by_leader]:
            self._fetchers.pop(leader).stop()
        for leader, tps in by_leader.items():
            fetcher = self._fetchers.get(leader)
            if fetcher is None:
                fetcher = self._fetchers[leader] = ReplicaFetcher(
                    self.manager,
                    self.config,
                    self.flusher,
                    leader,
                    self.recovery,
                    self.manager.monotonic_ms,
                    self.security,
                )
            fetcher.follow(tps)

    async def isr_loop(self) -> None:
        manager = self.manager
        lag_max_ms = self.config.replica_lag_time_max_ms
        while True:
            await asyncio.sleep(ISR_CHECK_INTERVAL_S)
            if not manager.lease_valid():
                continue  # the controller may have moved leadership already; it would refuse anyway
            now = manager.monotonic_ms()
            image = manager.image
            ineligible = frozenset(b for b, reg in image.brokers.items() if reg.fenced)
            for tp, p in manager.partitions.items():
                wanted = p.wanted_isr(now, lag_max_ms, ineligible)
                if wanted is not None:
                    p.begin_isr_change(wanted)
                    task = asyncio.get_running_loop().create_task(self._alter_isr(tp, p, wanted))
                    self._isr_tasks.add(task)
                    task.add_done_callback(self._isr_tasks.discard)

    async def _alter_isr(self, tp: TopicPartition, p: Partition, isr: tuple[int, ...]) -> None:
        cmd = AlterPartition(tp.topic, tp.partition, p.broker_id, p.leader_epoch, p.partition_epoch, isr)
        try:
            await self.manager.propose(cmd)
            log.info("%s: ISR %s -> %s", tp, list(p.isr), list(isr))
        except KafkaError as e:
            log.info("%s: ISR change to %s not made: %s", tp, list(isr), e.message)
            now = self.manager.monotonic_ms()
            p.isr_retry_at_ms = now + ISR_RETRY_AFTER_REFUSAL_MS
            if e.code is ErrorCode.NOT_CONTROLLER:
                # Unreachable controller or lost leadership: the command may still commit. Its replicas keep counting
                # for the high watermark until then (the partition epoch moving ends it sooner).
                p.end_isr_change(isr, refused=False, uncertain_until_ms=now + ISR_FATE_UNKNOWN_MS)
            else:
                p.end_isr_change(isr, refused=True)
        except BaseException:
            p.end_isr_change(isr, refused=False, uncertain_until_ms=self.manager.monotonic_ms() + ISR_FATE_UNKNOWN_MS)
            raise
        else:
            # Committed: ``propose`` returns once this shard applied the image that shows it.
            p.end_isr_change(isr, refused=False)

    async def close(self) -> None:
        for fetcher in self._fetchers.values():
            fetcher.stop()
        tasks = [f.task for f in self._fetchers.values() if f.task is not None] + list(self._isr_tasks)
        for task in self._isr_tasks:
            task.cancel()
        self._fetchers.clear()
        await asyncio.gather(*tasks, return_exceptions=True)


class ReplicaFetcher:
    """Fetches every partition this shard follows from one leader broker, over one connection."""

    def __init__(
        self,
        manager: FetcherHost,
        config: BrokerConfig,
        flusher: DirtyMarker,
        leader: int,
        recovery: follower.RecoveryThrottle,
        monotonic_ms: Callable[[], int],
        security: ClientSecurity,
    ) -> None:
        self.manager = manager
        self.config = config
        self.security = security
        self.flusher = flusher
        self.leader = leader
        self.recovery = recovery
        self._monotonic_ms = monotonic_ms
        self.partitions: set[TopicPartition] = set()
        self._changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = asyncio.get_running_loop().create_task(
            self._run(), name=f"replica-fetcher-{leader}"
        )
        self.task.add_done_callback(self._died)

    def _died(self, task: asyncio.Task[None]) -> None:
        """A fetcher only ends by ``stop``; one that failed would leave its partitions silently unreplicated."""
        if not task.cancelled() and task.exception() is not None:
            log.critical("replica fetcher for leader %d died", self.leader, exc_info=task.exception())

    def follow(self, partitions: set[TopicPartition]) -> None:
        if partitions != self.partitions:
            self.partitions = set(partitions)
        self._changed.set()  # an epoch may have changed too: look again now rather than after the long poll

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def _followed(self) -> follower.Followed:
        out = []
        for tp in sorted(self.partitions):
            p = self.manager.partitions.get(tp)
            if p is not None and self._still_following(tp, p, p.leader_epoch):
                out.append((tp, p))
        return out

    def _still_following(self, tp: TopicPartition, p: Partition, epoch: int) -> bool:
        """``p`` is still this shard's copy of ``tp``, following this fetcher's leader at ``epoch``."""
        return (
            self.manager.partitions.get(tp) is p
            and not p.is_leader
            and p.leader == self.leader
            and p.leader_epoch == epoch
        )

    async def _run(self) -> None:
        backoff = BACKOFF_MIN_S
        while True:
            try:
                await self._session()
            except KafkaClientError as e:
                # A refused certificate or login is a configuration to fix, not a broker restarting: say it louder.
                level = logging.WARNING if e.failure is Failure.SECURITY else logging.INFO
                log.log(level, "fetching from broker %d: %s; retrying in %.2f s", self.leader, e, backoff)
            except (FetchFailed, OSError, KafkaError) as e:  # OSError: the disk
                log.info("fetching from broker %d: %s; retrying in %.2f s", self.leader, e, backoff)
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await event_loop.within(self._changed.wait(), backoff)
            backoff = min(BACKOFF_MAX_S, backoff * 2)

    async def _session(self) -> None:
        reg = self.manager.image.brokers.get(self.leader)
        if reg is None:
            raise FetchFailed(f"broker {self.leader} is not registered")
        client = await KafkaClient.connect(
            reg.host,
            reg.port,
            client_id=_CLIENT_ID,
            response_bytes_max=self.config.replica_fetch_max_bytes + RESPONSE_BYTES_SLACK,
            security=self.security,
        )
        try:
            while True:
                followed = self._followed()
                if not followed:
                    self._changed.clear()
                    await self._changed.wait()
                    continue
                self._changed.clear()
                diverged = [(tp, p) for tp, p in followed if p.needs_truncation]
                if diverged:
                    await self._truncate(client, diverged)
                    continue
                in_sync, recovering = follower.split_recovering(self.manager.broker_id, followed)
                budget = self.recovery.available(self._monotonic_ms()) if recovering else 0
                if recovering and budget <= 0:
                    if not in_sync:  # only new replicas, and their budget is spent: wait for it (or a change)
                        with contextlib.suppress(TimeoutError):
                            await event_loop.within(
                                self._changed.wait(), self.recovery.wait_ms(self._monotonic_ms()) / 1000
                            )
                        continue
                    followed = in_sync
                caps = {tp: budget for tp, _ in recovering} if budget > 0 else None
                await self._fetch(client, followed, caps)
        finally:
            client.close()

    def _replica(self) -> follower.Replica:
        config = self.config
        return follower.Replica(
            self.manager.broker_id,
            self.manager.broker_epoch,
            config.replica_fetch_max_bytes,
            config.replica_fetch_wait_max_ms,
        )

    async def _truncate(self, client: KafkaClient, diverged: follower.Followed) -> None:
        """KIP-101: ask the leader where the logs agree; ``follower.apply_epochs`` drops what lies beyond."""
        request, asked = follower.epoch_request(self._replica(), diverged)
        response = await client.request(request, OffsetForLeaderEpochResponse)
        failed = follower.apply_epochs(response, asked, self._still_following)
        for tp, code in failed:
            log.info("%s: OffsetForLeaderEpoch from broker %d: %s", tp, self.leader, code.name)
        if failed:
            raise FetchFailed("the leader could not answer for every partition yet")

    async def _fetch(
        self, client: KafkaClient, followed: follower.Followed, caps: Mapping[TopicPartition, int] | None = None
    ) -> None:
        """One Fetch of ``followed``; the partitions in ``caps`` are new replicas whose copy is throttled."""
        request, sent = follower.fetch_request(self._replica(), followed, caps)
        response = await client.request(request, FetchResponse)
        error = follower.fetch_error(response)
        if error is not None:
            raise FetchFailed(error)
        out = follower.Fetched()
        try:
            follower.apply_fetch(response, sent, self._still_following, self.manager.now_ms(), out)
        finally:
            if caps:
                copied = sum(n for tp, n in out.copied.items() if tp in caps)
                self.recovery.charge(copied, self._monotonic_ms())
            for p, _ in out.appended:
                self.flusher.mark_dirty(p)
            if out.appended and self.config.durability is Durability.FSYNC:
                # The next fetch tells the leader this copy holds everything before its offset: make that true on
                # disk (also after an error part-way: what was appended must be durable before it is reported).
                await asyncio.gather(*(p.wait_durable(last) for p, last in out.appended))
        for tp, code in out.errors:
            log.warning("%s: fetch from broker %d failed: %s", tp, self.leader, code.name)
        if out.retry:
            raise FetchFailed("some partitions cannot be fetched right now")
