"""The audit log's shell: one per process, writing the events of ``rafka_shards.security.audit`` as JSON lines to a
rotated file, and with ``audit_log_to_topic`` to the internal topic ``_rafka.audit_log`` too.

Runs in every process of a node: each shard (``audit-broker-<id>.jsonl``) and the controller process
(``audit-controller.jsonl``: its admin API's requests and the active controller's own changes). They are separate OS
processes, so each has its own file in ``audit_log_dir`` (default ``DATA_DIR/audit``). It lives in ``ipc`` because
both process packages use it and neither may import the other.

``AuditLog.audit(event)`` is called on the event loop by whoever records something: it encodes the line at once and
puts it in a bounded queue (``QUEUE_LINES_MAX``); it never blocks and never raises. When the queue is full the
event is dropped and counted (``rafka_audit_events_dropped_total{reason="queue_full"}``), never silently; the
sequence numbers in the file show the gap too. A task flushes the queue every ``FLUSH_INTERVAL_S`` (sooner once
``FLUSH_LINES`` are waiting): the batch is written to the file by one worker thread (a write of the whole batch, so
the loop never waits for the disk), the file rotated at ``audit_log_max_bytes`` keeping ``audit_log_backups``
files (``.1`` the newest). Lines are written to the OS, not fsynced: an audit line is not worth an fsync per
batch; a process crash loses nothing written, a power loss the last seconds.

The topic: the lines written go to a bounded backlog (``TOPIC_BACKLOG_LINES_MAX``, then the oldest are dropped and
counted with ``reason="topic_backlog_full"``), which a task of its own appends as record batches of at most
``TOPIC_BATCH_BYTES_MAX`` (``TopicWriter.append``, one at a time, in order); a batch the topic does not take is tried
again after the next flush. The file never waits for the topic. ``close`` flushes what is left, bounded by
``CLOSE_TIMEOUT_S``.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import datetime
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import BinaryIO, Final, Protocol

from kio.schema.errors import ErrorCode as KioErrorCode
from kio.schema.produce.v8.request import PartitionProduceData, ProduceRequest, TopicProduceData
from kio.schema.produce.v8.response import ProduceResponse
from kio.schema.types import TopicName
from kio.static.primitive import Records, i16, i32, i32Timedelta
from prometheus_client import Counter

from controller.image import MetadataImage
from controller.raft.node import NotLeader, ProposalDropped
from controller.state_machine import CommandRejected, RejectKind
from controller.topics import TopicProposal
from rafka_shards import event_loop
from rafka_shards.config import BrokerConfig
from rafka_shards.ipc.kafka_client import KafkaClient, KafkaClientError
from rafka_shards.records.builder import Record, build_batch
from rafka_shards.security.audit import (
    AUDIT_TOPIC,
    NULL_SINK,
    AuditEncoder,
    AuditEvent,
    AuditSink,
    audit_topic_request,
)
from rafka_shards.security.client_security import PLAINTEXT, ClientSecurity

log = logging.getLogger(__name__)

QUEUE_LINES_MAX: Final = 10_000  # events waiting for the next flush; more are dropped (and counted)
FLUSH_LINES: Final = 1_000  # a flush starts early once this many wait
FLUSH_INTERVAL_S: Final = 0.5
TOPIC_BACKLOG_LINES_MAX: Final = 10_000  # lines the topic has not taken yet (it is down, not created yet)
TOPIC_BATCH_BYTES_MAX: Final = 512 * 1024  # one record batch's values at most (well below max.message.bytes)
TOPIC_TIMEOUT_S: Final = 10.0  # one append to the topic, connection included
TOPIC_RESPONSE_BYTES_MAX: Final = 64 * 1024
CLOSE_TIMEOUT_S: Final = 5.0

EVENTS = Counter("rafka_audit_events", "audit events recorded, by kind", ["kind"])
DROPPED = Counter(
    "rafka_audit_events_dropped",
    "audit events dropped, by reason: queue_full (the process recorded faster than its file took them), "
    "topic_backlog_full (the audit topic was unavailable for too long), write_failed (the file's disk failed), "
    "unencodable",
    ["reason"],
)


def audit_log_dir(config: BrokerConfig) -> Path:
    return Path(config.audit_log_dir) if config.audit_log_dir else Path(config.data_dir) / "audit"


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class RotatingFile:
    """A JSON-lines file rotated at ``max_bytes``: ``name`` becomes ``name.1``, ``name.1`` becomes ``name.2``, and so
    on up to ``backups`` files (0: the full file is removed). Plain blocking I/O: ``AuditLog`` calls it from one
    worker thread only."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        assert max_bytes > 0 and backups >= 0
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._file: BinaryIO | None = None
        self._size = 0
        self.rotations = 0

    def _open(self) -> BinaryIO:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab")  # noqa: SIM115  (kept open between batches, closed by close/rotate)
            self._size = self._file.tell()
        return self._file

    def write(self, lines: Sequence[bytes]) -> None:
        """Append ``lines`` (each ending in a newline), rotating before a line that would pass ``max_bytes``."""
        chunk: list[bytes] = []
        chunk_bytes = 0
        self._open()
        for line in lines:
            if self._size + chunk_bytes + len(line) > self.max_bytes and self._size + chunk_bytes > 0:
                self._write_chunk(chunk, chunk_bytes)
                chunk, chunk_bytes = [], 0
                self._rotate()
            chunk.append(line)
            chunk_bytes += len(line)
        self._write_chunk(chunk, chunk_bytes)

    def _write_chunk(self, chunk: list[bytes], chunk_bytes: int) -> None:
        if not chunk:
            return
        f = self._open()
        f.write(b"".join(chunk))
        f.flush()
        self._size += chunk_bytes

    def _rotate(self) -> None:
        self.close()
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        else:
            self._backup(self.backups).unlink(missing_ok=True)
            for n in range(self.backups - 1, 0, -1):
                older = self._backup(n)
                if older.exists():
                    os.replace(older, self._backup(n + 1))
            os.replace(self.path, self._backup(1))
        self.rotations += 1
        self._open()

    def _backup(self, n: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{n}")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            self._size = 0


class TopicWriter(Protocol):
    """Appends lines to ``_rafka.audit_log`` as one record batch; raises ``AuditTopicError`` when it cannot."""

    async def append(self, lines: Sequence[bytes]) -> None: ...

    def close(self) -> None: ...


class AuditTopicError(Exception):
    """The audit topic did not take a batch (not created yet, no leader, the leader refused); tried again later."""


class AuditLog:
    """One process's audit log (see the module's docstring); an ``AuditSink``."""

    def __init__(
        self,
        encoder: AuditEncoder,
        file: RotatingFile,
        topic: TopicWriter | None = None,
        queue_lines_max: int = QUEUE_LINES_MAX,
    ) -> None:
        self.encoder = encoder
        self.file = file
        self.topic = topic
        self._queue: collections.deque[bytes] = collections.deque()
        self._queue_max = queue_lines_max
        self._backlog: collections.deque[bytes] = collections.deque()  # lines the topic has yet to take
        self._trimmed = 0  # lines dropped from the backlog's front because it overflowed, ever
        self._wake = asyncio.Event()
        self._file_lock = asyncio.Lock()
        self._topic_lock = asyncio.Lock()  # one append in flight: batches reach the topic in order
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="audit")
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def audit(self, event: AuditEvent) -> None:
        """Record ``event`` (on the event loop's thread). Never blocks, never raises: a full queue drops it and
        counts the drop."""
        kind = event.KIND.value
        if len(self._queue) >= self._queue_max:
            self.dropped += 1
            DROPPED.labels("queue_full").inc()
            self.encoder.seq += 1  # the gap in the sequence numbers shows where
            return
        try:
            line = self.encoder.encode(event)
        except TypeError as e:  # orjson's JSONEncodeError: a field of a type the core does not describe (a bug)
            log.error("audit: a %s event could not be encoded, dropped: %s", kind, e)
            self.dropped += 1
            DROPPED.labels("unencodable").inc()
            return
        self._queue.append(line)
        EVENTS.labels(kind).inc()
        if len(self._queue) >= FLUSH_LINES:
            self._wake.set()

    def start(self) -> None:
        """Start the flushing task (on the running loop); ``close`` ends it."""
        assert self._task is None
        self._task = asyncio.get_running_loop().create_task(self._run(), name="audit-log")

    async def _run(self) -> None:
        """Write the file every FLUSH_INTERVAL_S; the topic is fed by a task of its own, so a slow or unreachable
        topic (each attempt bounded by TOPIC_TIMEOUT_S) never holds the file back."""
        topic_task: asyncio.Task[None] | None = None
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await event_loop.within(self._wake.wait(), FLUSH_INTERVAL_S)
                self._wake.clear()
                await self._write_file()
                if self.topic is not None and self._backlog and (topic_task is None or topic_task.done()):
                    topic_task = asyncio.get_running_loop().create_task(self._to_topic(self.topic), name="audit-topic")
        finally:
            if topic_task is not None:
                topic_task.cancel()
                await asyncio.gather(topic_task, return_exceptions=True)

    async def flush(self) -> None:
        """Write what is queued to the file, then offer the topic what it has not taken yet."""
        await self._write_file()
        if self.topic is not None:
            await self._to_topic(self.topic)

    async def _write_file(self) -> None:
        async with self._file_lock:
            lines = list(self._queue)
            self._queue.clear()
            if not lines:
                return
            try:
                await asyncio.get_running_loop().run_in_executor(self._executor, self.file.write, lines)
            except OSError as e:  # a full or failing disk must not stop the broker: say it, count the loss
                log.error("audit log %s: %d event(s) lost: %s", self.file.path, len(lines), e)
                self.dropped += len(lines)
                DROPPED.labels("write_failed").inc(len(lines))
            if self.topic is not None:
                self._backlog.extend(lines)
                excess = len(self._backlog) - TOPIC_BACKLOG_LINES_MAX
                if excess > 0:
                    for _ in range(excess):
                        self._backlog.popleft()
                    self._trimmed += excess
                    self.dropped += excess
                    DROPPED.labels("topic_backlog_full").inc(excess)

    async def _to_topic(self, topic: TopicWriter) -> None:
        """Append the backlog to the topic, one record batch at a time, oldest first, until it is empty or the topic
        refuses (the rest waits for the next flush)."""
        async with self._topic_lock:
            while self._backlog:
                batch: list[bytes] = []
                size = 0
                for line in self._backlog:
                    if batch and size + len(line) > TOPIC_BATCH_BYTES_MAX:
                        break
                    batch.append(line)
                    size += len(line)
                trimmed = self._trimmed
                try:
                    await event_loop.within(topic.append(batch), TOPIC_TIMEOUT_S)
                except (AuditTopicError, TimeoutError) as e:
                    log.debug("audit topic: %d line(s) wait: %s", len(self._backlog), e)
                    return
                except Exception:
                    # A bug in the topic's path must not stop the file's: said loudly, the lines wait for a retry.
                    log.exception("audit topic: appending failed; %d line(s) wait", len(self._backlog))
                    return
                # Meanwhile the backlog grew at its end, and lost lines at its front only if it overflowed: those
                # were lines of this batch, already gone.
                for _ in range(max(0, len(batch) - (self._trimmed - trimmed))):
                    self._backlog.popleft()

    async def close(self) -> None:
        """Stop the tasks, write what is left (bounded by CLOSE_TIMEOUT_S), close the file."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        with contextlib.suppress(TimeoutError):
            await event_loop.within(self.flush(), CLOSE_TIMEOUT_S)
        if self.topic is not None:
            self.topic.close()
        await asyncio.get_running_loop().run_in_executor(self._executor, self.file.close)
        self._executor.shutdown(wait=True)


def open_audit_log(
    config: BrokerConfig,
    process: str,
    now_ms: Callable[[], int],
    topic: Callable[[], TopicWriter] | None = None,
) -> AuditLog | None:
    """This process's audit log if ``audit_enabled`` (None otherwise), not started yet. ``topic`` makes the topic
    writer, used when ``audit_log_to_topic`` is on."""
    if not config.audit_enabled:
        return None
    file = RotatingFile(
        audit_log_dir(config) / f"audit-{process}.jsonl", config.audit_log_max_bytes, config.audit_log_backups
    )
    writer = topic() if config.audit_log_to_topic and topic is not None else None
    return AuditLog(AuditEncoder(config.node_id, process, now_ms), file, writer)


def sink(audit_log: AuditLog | None) -> AuditSink:
    return NULL_SINK if audit_log is None else audit_log


# ---- the topic through a partition leader's Kafka listener ---------------------------------------------------------


async def create_audit_topic(
    propose_topic: Callable[[TopicProposal], Awaitable[int]], image: Callable[[], MetadataImage]
) -> None:
    """Create ``_rafka.audit_log`` through ``propose_topic`` (a process's proposer); an existing one is success."""
    try:
        await propose_topic(TopicProposal(audit_topic_request(image()), uuid.uuid4()))
    except CommandRejected as e:
        if e.rejection.kind is not RejectKind.TOPIC_ALREADY_EXISTS:
            raise AuditTopicError(f"creating {AUDIT_TOPIC}: {e.rejection.message}") from None
    except (NotLeader, ProposalDropped) as e:
        raise AuditTopicError(f"creating {AUDIT_TOPIC}: {e}") from None


def audit_batch(lines: Sequence[bytes], key: bytes, now_ms: int) -> bytes:
    """One record batch of ``lines`` (each a record's value, without its newline), keyed by the process."""
    return build_batch([Record(key, line.rstrip(b"\n"), now_ms) for line in lines])


class RemoteAuditTopic:
    """Appends to ``_rafka.audit_log`` by producing to its partition's leader over the inter-broker listener (the
    address every broker registers), acks=all, one record batch per call. ``image`` is this process's current
    metadata; ``create`` creates the topic when it does not exist yet (a ``TopicProposal``; TOPIC_ALREADY_EXISTS is
    success). One connection, kept while the leader stays the same; ``connect`` makes it (default: with ``security``,
    the inter-broker client's TLS and SASL login, ``security.client_security.inter_broker_security``)."""

    def __init__(
        self,
        image: Callable[[], MetadataImage],
        create: Callable[[], Awaitable[None]],
        key: bytes,
        now_ms: Callable[[], int],
        client_id: str = "rafka-audit",
        connect: Callable[[str, int], Awaitable[KafkaClient]] | None = None,
        security: ClientSecurity = PLAINTEXT,
    ) -> None:
        self._image = image
        self._create = create
        self._key = key
        self._now_ms = now_ms
        self._connect = connect or (
            lambda host, port: KafkaClient.connect(
                host, port, client_id=client_id, response_bytes_max=TOPIC_RESPONSE_BYTES_MAX, security=security
            )
        )
        self._client: KafkaClient | None = None
        self._leader: tuple[str, int] | None = None

    async def leader(self) -> tuple[int, tuple[str, int]]:
        """The leader broker of the audit partition and its address (creating the topic first if need be)."""
        topic = self._image().topics.get(AUDIT_TOPIC)
        if topic is None:
            await self._create()
            topic = self._image().topics.get(AUDIT_TOPIC)
            if topic is None:
                raise AuditTopicError(f"{AUDIT_TOPIC} is not created yet")
        leader = topic.partitions[0].leader
        reg = self._image().brokers.get(leader)
        if leader < 0 or reg is None:
            raise AuditTopicError(f"{AUDIT_TOPIC} has no leader")
        return leader, (reg.host, reg.port)

    async def append(self, lines: Sequence[bytes]) -> None:
        _, address = await self.leader()
        await self.produce(address, audit_batch(lines, self._key, self._now_ms()))

    async def produce(self, address: tuple[str, int], batch: bytes) -> None:
        if self._client is None or self._leader != address:
            self.close()
            try:
                self._client = await self._connect(*address)
            except KafkaClientError as e:
                raise AuditTopicError(f"connecting to {address[0]}:{address[1]}: {e}") from None
            self._leader = address
        request = ProduceRequest(
            transactional_id=None,
            acks=i16(-1),
            timeout=i32Timedelta.parse(datetime.timedelta(seconds=TOPIC_TIMEOUT_S)),
            topic_data=(
                TopicProduceData(
                    name=TopicName(AUDIT_TOPIC),
                    partition_data=(PartitionProduceData(index=i32(0), records=Records(batch)),),
                ),
            ),
        )
        try:
            response = await self._client.request(request, ProduceResponse)
        except KafkaClientError as e:
            self.close()
            raise AuditTopicError(f"producing: {e}") from None
        code = response.responses[0].partition_responses[0].error_code
        if code != KioErrorCode.none:
            self.close()  # the leader moved: look it up again next time
            raise AuditTopicError(f"the leader answered {code.name}")

    def close(self) -> None:
        if self._client is not None:
            self._client.abort()
            self._client = None
            self._leader = None
