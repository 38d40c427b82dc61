"""Load generators: producer and consumer processes for each protocol (confluent-kafka for every Kafka-compatible
broker, nats-py for NATS JetStream, redis-py with hiredis for Redis Streams).

Every message carries ``[u64 send time (CLOCK_MONOTONIC ns)][u64 sequence]`` in its first 16 bytes, so the
consumer measures end-to-end latency against the same clock (one machine). A producer records the acknowledgement
latency of every message it sends after the warm-up; a consumer the end-to-end latency of every such message it
reads. Latencies travel back as arrays of microseconds; throughput counts only what was sent after the warm-up.
A keyed load (Kafka only, for compacted topics) gives each message one of ``keys`` distinct keys, uniformly at
random (a fixed hash of the message's number: runs repeat), each key always in the same partition, and can send
back every measured message's send time too. Every loop is bounded by the
step's message cap and deadline.
"""

from __future__ import annotations

import array
import asyncio
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil

HEADER = struct.Struct(">QQ")
RATE_SLICE_S = 0.001  # how finely a rate-limited producer spreads its sends
REDIS_PIPELINE_MAX = 256
NATS_IN_FLIGHT_MAX = 512
CONSUMER_IDLE_S = 1.0
KAFKA_BATCH = 1000
KAFKA_BATCH_WAIT_S = 0.001


@dataclass(frozen=True)
class Load:
    """What one client process does: the step's load and its share of it."""

    protocol: str
    address: str
    topics: tuple[str, ...]
    partitions: int
    message_size: int
    acks: str
    compression: str
    linger_ms: int
    batch_size: int
    rate: float  # this producer's target msg/s; 0 = as fast as it goes
    messages_max: int  # this producer's cap
    start_ns: int  # CLOCK_MONOTONIC: when to start sending
    warm_end_ns: int  # messages sent before this are not measured
    end_ns: int  # stop sending at this time
    deadline_ns: int  # give up waiting for acks / messages at this time
    client_index: int = 0
    clients: int = 1
    keys: int = 0  # Kafka: message n of the step gets key n % keys (0: no key)
    send_times: bool = False  # report the send time of every measured message (Report.sent_ns)
    client_config: tuple[tuple[str, str], ...] = ()  # Kafka: librdkafka's security settings (Broker.client_config)


@dataclass
class Report:
    """What a client process sends back to the runner."""

    sent: int = 0
    acked: int = 0  # all acknowledged (producer) or read (consumer)
    measured: int = 0  # of those, sent after the warm-up
    errors: int = 0
    first_ns: int = 0  # first measured ack / read
    last_ns: int = 0  # last measured ack / read
    nbytes: int = 0
    latencies_us: bytes = b""  # array('Q') of measured latencies
    sent_ns: bytes = b""  # array('Q') of their send times (CLOCK_MONOTONIC), in the same order, if Load.send_times
    cpu_s: float = 0.0
    error_text: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _cpu() -> float:
    t = psutil.Process().cpu_times()
    return float(t.user + t.system)


def _payload(size: int) -> bytearray:
    return bytearray(os.urandom(size))


def _sleep_until(ns: int) -> None:
    delay = (ns - time.monotonic_ns()) / 1e9
    if delay > 0:
        time.sleep(delay)


class _Pacer:
    """When a producer sends: at most ``rate`` msg/s on average (none: flat out), at most ``messages_max`` during the
    warm-up and as many after it (so a small cap still measures something), never after ``end_ns``."""

    def __init__(self, load: Load) -> None:
        self.load = load
        self.seq = 0  # messages sent
        self.warm = 0  # of those, during the warm-up

    def next(self, now_ns: int) -> str:
        """ "send", "wait" (ahead of the rate, or the warm-up's share is spent) or "stop"."""
        load = self.load
        if now_ns >= load.end_ns or self.seq - self.warm >= load.messages_max:
            return "stop"
        if now_ns < load.warm_end_ns and self.warm >= load.messages_max:
            return "wait"
        if load.rate and self.seq >= int((now_ns - load.start_ns) / 1e9 * load.rate) + 1:
            return "wait"
        return "send"

    def sent(self, now_ns: int) -> int:
        """Count one message sent at ``now_ns``; its sequence number."""
        if now_ns < self.load.warm_end_ns:
            self.warm += 1
        self.seq += 1
        return self.seq - 1


class _Recorder:
    def __init__(self, load: Load) -> None:
        self.load = load
        self.report = Report()
        self.latencies = array.array("Q")
        self.sent = array.array("Q")

    def measured(self, sent_ns: int, done_ns: int, size: int) -> None:
        r = self.report
        if sent_ns < self.load.warm_end_ns:
            return
        r.measured += 1
        r.nbytes += size
        if not r.first_ns:
            r.first_ns = done_ns
        r.last_ns = max(r.last_ns, done_ns)
        self.latencies.append(max(0, done_ns - sent_ns) // 1000)
        if self.load.send_times:
            self.sent.append(sent_ns)

    def finish(self) -> Report:
        self.report.latencies_us = self.latencies.tobytes()
        self.report.sent_ns = self.sent.tobytes()
        self.report.cpu_s = _cpu()
        return self.report


# ---- producers -------------------------------------------------------------------------------------------------


def produce(load: Load) -> Report:
    return {"kafka": _kafka_produce, "nats": _nats_produce, "redis": _redis_produce}[load.protocol](load)


def _target(load: Load, seq: int) -> tuple[str, int]:
    """Where message ``seq`` of this producer goes: topics and partitions in turn (keyed: by its key's index)."""
    n = seq * load.clients + load.client_index
    if load.keys:
        n = _key_index(load, n)
    return load.topics[n % len(load.topics)], (n // len(load.topics)) % load.partitions


_U64 = (1 << 64) - 1


def _key_index(load: Load, n: int) -> int:
    """The key of the step's message ``n``: splitmix64(n) modulo the keys, uniform and the same in every run."""
    z = (n + 0x9E3779B97F4A7C15) & _U64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _U64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _U64
    return (z ^ (z >> 31)) % load.keys


def key_of(load: Load, seq: int) -> bytes | None:
    """The key of message ``seq`` of this producer (None for a keyless load)."""
    if not load.keys:
        return None
    return b"key-%09d" % _key_index(load, seq * load.clients + load.client_index)


def _kafka_produce(load: Load) -> Report:
    from confluent_kafka import KafkaException, Producer

    rec = _Recorder(load)
    producer = Producer(
        {
            **dict(load.client_config),
            "bootstrap.servers": load.address,
            "acks": load.acks if load.acks != "all" else "-1",
            "linger.ms": load.linger_ms,
            "batch.size": load.batch_size,
            "compression.type": load.compression,
            "queue.buffering.max.kbytes": 256 * 1024,
            "queue.buffering.max.messages": 1_000_000,
            "message.timeout.ms": max(5000, (load.deadline_ns - load.start_ns) // 1_000_000),
        }
    )
    size = load.message_size
    error_text: list[str] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            rec.report.errors += 1
            if not error_text:
                error_text.append(str(err))
            return
        rec.report.acked += 1
        done = time.monotonic_ns()
        rec.measured(done - int(msg.latency() * 1e9), done, size)

    buf = _payload(size)
    _sleep_until(load.start_ns)
    pacer = _Pacer(load)
    while True:
        now = time.monotonic_ns()
        action = pacer.next(now)
        if action == "stop":
            break
        if action == "wait":
            producer.poll(RATE_SLICE_S)
            continue
        topic, partition = _target(load, pacer.seq)
        HEADER.pack_into(buf, 0, now, pacer.seq)
        try:
            producer.produce(
                topic, bytes(buf), key=key_of(load, pacer.seq), partition=partition, on_delivery=on_delivery
            )
        except BufferError:
            producer.poll(0.001)
            continue
        except KafkaException as e:
            rec.report.errors += 1
            error_text.append(str(e))
            break
        if pacer.sent(now) % 1000 == 999:
            producer.poll(0)
    rec.report.sent = pacer.seq
    remaining = producer.flush(max(0.0, (load.deadline_ns - time.monotonic_ns()) / 1e9))
    if remaining:
        rec.report.errors += remaining
        error_text.append(f"{remaining} message(s) not acknowledged before the deadline")
    rec.report.error_text = "; ".join(error_text[:3])
    return rec.finish()


def _redis_produce(load: Load) -> Report:
    import redis

    rec = _Recorder(load)
    client = redis.Redis(host="127.0.0.1", port=int(load.address.rpartition(":")[2]), socket_timeout=30)
    size = load.message_size
    buf = _payload(size)
    _sleep_until(load.start_ns)
    pacer = _Pacer(load)
    try:
        while True:
            pipe = client.pipeline(transaction=False)
            sent_at: list[int] = []
            action = "send"
            while len(sent_at) < REDIS_PIPELINE_MAX:  # what is due now goes in one pipeline
                t = time.monotonic_ns()
                action = pacer.next(t)
                if action != "send":
                    break
                topic, partition = _target(load, pacer.seq)
                HEADER.pack_into(buf, 0, t, pacer.seq)
                pipe.xadd(f"{topic}:{partition}", {"d": bytes(buf)})
                pacer.sent(t)
                sent_at.append(t)
            if sent_at:
                pipe.execute()
                done = time.monotonic_ns()
                rec.report.acked += len(sent_at)
                for t in sent_at:
                    rec.measured(t, done, size)
            elif action == "stop":
                break
            else:
                time.sleep(RATE_SLICE_S)
    except redis.RedisError as e:
        rec.report.errors += 1
        rec.report.error_text = str(e)
    rec.report.sent = pacer.seq
    return rec.finish()


def _nats_produce(load: Load) -> Report:
    return asyncio.run(_nats_produce_async(load))


async def _nats_produce_async(load: Load) -> Report:
    import nats
    from nats.errors import Error as NatsError

    rec = _Recorder(load)
    nc = await nats.connect(f"nats://{load.address}", max_reconnect_attempts=0)
    js = nc.jetstream()
    size = load.message_size
    window = asyncio.Semaphore(NATS_IN_FLIGHT_MAX)
    tasks: set[asyncio.Task[None]] = set()

    async def publish(subject: str, data: bytes, sent_ns: int) -> None:
        try:
            await js.publish(subject, data, timeout=30)
        except (NatsError, TimeoutError) as e:
            rec.report.errors += 1
            rec.report.error_text = rec.report.error_text or str(e) or type(e).__name__
        else:
            rec.report.acked += 1
            rec.measured(sent_ns, time.monotonic_ns(), size)
        finally:
            window.release()

    buf = _payload(size)
    await asyncio.sleep(max(0.0, (load.start_ns - time.monotonic_ns()) / 1e9))
    pacer = _Pacer(load)
    while True:
        now = time.monotonic_ns()
        action = pacer.next(now)
        if action == "stop":
            break
        if action == "wait":
            await asyncio.sleep(RATE_SLICE_S)
            continue
        await window.acquire()
        topic, partition = _target(load, pacer.seq)
        HEADER.pack_into(buf, 0, now, pacer.seq)
        task = asyncio.get_running_loop().create_task(publish(f"{topic}.{partition}", bytes(buf), now))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        pacer.sent(now)
    rec.report.sent = pacer.seq
    if tasks:
        await asyncio.wait(tasks, timeout=max(0.1, (load.deadline_ns - time.monotonic_ns()) / 1e9))
    await nc.close()
    return rec.finish()


# ---- consumers -------------------------------------------------------------------------------------------------


def consume(load: Load, expected: Callable[[], int]) -> Report:
    """Read this consumer's share of the partitions until the producers are done and it has read everything
    (``expected()``: -1 while they run, then how many they had acknowledged), or the deadline passed."""
    return {"kafka": _kafka_consume, "nats": _nats_consume, "redis": _redis_consume}[load.protocol](load, expected)


def _mine(load: Load) -> list[tuple[str, int]]:
    every = [(t, p) for t in load.topics for p in range(load.partitions)]
    return every[load.client_index :: load.clients]


class _Stop:
    """When a consumer is done: at the deadline, or once the producers finished (``expected()`` >= 0) and either
    everything was read (one consumer) or nothing new came for ``CONSUMER_IDLE_S`` (several share the work)."""

    def __init__(self, rec: _Recorder, expected: Callable[[], int]) -> None:
        self.rec = rec
        self.expected = expected
        self.producers_done_ns = 0
        self.last_count = -1
        self.last_change_ns = 0

    def __call__(self) -> bool:
        now = time.monotonic_ns()
        if now >= self.rec.load.deadline_ns:
            return True
        count = self.rec.report.acked
        if count != self.last_count:
            self.last_count, self.last_change_ns = count, now
        want = self.expected()
        if want < 0:
            return False
        if not self.producers_done_ns:
            self.producers_done_ns = now
        if self.rec.load.clients == 1 and count >= want:
            return True
        return now - max(self.last_change_ns, self.producers_done_ns) >= CONSUMER_IDLE_S * 1e9


def _read(rec: _Recorder, value: bytes, now: int) -> None:
    rec.report.acked += 1
    sent_ns, _ = HEADER.unpack_from(value, 0)
    rec.measured(sent_ns, now, len(value))


def _kafka_consume(load: Load, expected: Callable[[], int]) -> Report:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    rec = _Recorder(load)
    consumer = Consumer(
        {
            **dict(load.client_config),
            "bootstrap.servers": load.address,
            "group.id": f"bench-{os.getpid()}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
            "fetch.max.bytes": 52_428_800,
            "max.partition.fetch.bytes": 4 * 1_048_576,
            "queued.max.messages.kbytes": 256 * 1024,
        }
    )
    consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in _mine(load)])
    done = _Stop(rec, expected)
    while not done():
        # consume() returns when the batch is full or the timeout ends: a long timeout would hold messages that
        # arrived early in it, and count that wait as broker latency.
        messages = consumer.consume(KAFKA_BATCH, KAFKA_BATCH_WAIT_S)
        now = time.monotonic_ns()
        for m in messages:
            value = m.value()
            if m.error() is None and value is not None:
                _read(rec, value, now)
            else:
                rec.report.errors += 1
                rec.report.error_text = rec.report.error_text or str(m.error())
    consumer.close()
    return rec.finish()


def _redis_consume(load: Load, expected: Callable[[], int]) -> Report:
    import redis

    rec = _Recorder(load)
    client = redis.Redis(host="127.0.0.1", port=int(load.address.rpartition(":")[2]), socket_timeout=30)
    streams: dict[Any, Any] = {f"{t}:{p}": "0-0" for t, p in _mine(load)}
    done = _Stop(rec, expected)
    try:
        while not done():
            answer: Any = client.xread(streams, count=2000, block=100)
            now = time.monotonic_ns()
            for key, entries in answer or []:
                for _, fields in entries:
                    _read(rec, fields[b"d"], now)
                streams[key.decode()] = entries[-1][0].decode()
    except redis.RedisError as e:
        rec.report.errors += 1
        rec.report.error_text = str(e)
    return rec.finish()


def _nats_consume(load: Load, expected: Callable[[], int]) -> Report:
    return asyncio.run(_nats_consume_async(load, expected))


async def _nats_consume_async(load: Load, expected: Callable[[], int]) -> Report:
    import nats
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    rec = _Recorder(load)
    nc = await nats.connect(f"nats://{load.address}", max_reconnect_attempts=0)
    js = nc.jetstream()
    subs = []
    for topic in load.topics:
        # One durable pull consumer per topic, shared by every consumer process: each message goes to one of them.
        config = ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL)
        subs.append(await js.pull_subscribe(f"{topic}.>", durable="bench", stream=stream_name(topic), config=config))
    done = _Stop(rec, expected)
    while not done():
        for sub in subs:
            try:
                messages = await sub.fetch(batch=2000, timeout=0.1)
            except (NatsTimeout, TimeoutError):
                continue
            now = time.monotonic_ns()
            for m in messages:
                _read(rec, m.data, now)
    await nc.close()
    return rec.finish()


def stream_name(topic: str) -> str:
    return topic.replace(".", "_").replace("-", "_").upper()
