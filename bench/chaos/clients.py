"""The chaos workload's clients: idempotent ``acks=all`` producers and reading consumers, each in its own process
writing a JSONL history, and the final read of every partition to its high watermark.

Producers and consumers run in processes spawned by the runner; ``final_read`` and the history loaders in the
orchestrating process. A message's value is ``<producer>:<seq>:`` padded to ``message_bytes``, where ``producer`` is
``<index>.<incarnation>``: a producer process starts incarnation 0, and after a fatal error (the idempotent producer's
OUT_OF_ORDER_SEQUENCE_NUMBER, ...) records it and starts the next incarnation (a new producer id), so its sequences
keep one meaning. Every loop here ends by itself: by the job's end time, and the flush and the final read by their
own bounds.

History lines (one JSON object each):

- producer: ``{"k": "ack", "pr", "s", "p", "o", "ts", "ta"}`` (producer, seq, partition, offset, sent and
  acknowledged CLOCK_MONOTONIC seconds), ``{"k": "err", "pr", "s", "p", "e", "fatal", "ta"}``, ``{"k": "fatal",
  "pr", "e", "ta"}`` (an incarnation ended);
- each client's stderr (librdkafka's log, a traceback) goes to ``<history>.log`` next to its history;
- consumer: ``{"k": "r", "p", "o", "pr", "s", "ta"}`` (a record read), ``{"k": "hw", "p", "hw", "ta"}`` (a high
  watermark shown in a fetch response, when it changed).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from bench.chaos.checker import Ack, Entry, FinalPartition, HwSeen, ProduceError, Seen

POLL_S = 0.005
FLUSH_EVERY_S = 1.0  # history files are flushed this often (a killed client loses at most this much)
CONSUME_BATCH = 500
CONSUME_WAIT_S = 0.2
HW_SAMPLE_S = 0.5
FATAL_DRAIN_S = 5.0  # after a fatal error, how long to wait for the failed messages' reports
MESSAGE_TIMEOUT_MS = 120_000  # librdkafka gives up on a message after this (it retries until then)
INCARNATIONS_MAX = 1000
LOG_LEVEL = 3  # librdkafka's own log: errors and fatal errors only (disconnects during faults are expected)


@dataclass(frozen=True, slots=True)
class ProducerJob:
    index: int
    bootstrap: str
    topic: str
    partitions: int
    rate: float  # messages per second
    message_bytes: int
    start_s: float  # CLOCK_MONOTONIC
    end_s: float  # stop sending
    flush_s: float  # then wait at most this long for outstanding acknowledgements
    history: str


@dataclass(frozen=True, slots=True)
class ConsumerJob:
    index: int
    bootstrap: str
    topic: str
    partitions: int
    end_s: float
    history: str


def encode(producer: str, seq: int, size: int) -> bytes:
    head = f"{producer}:{seq}:".encode()
    return head + b"x" * max(0, size - len(head))


def decode(value: bytes | None) -> Entry:
    """The workload's (producer, seq) of a value; producer "" for anything else."""
    if value:
        parts = value.split(b":", 2)
        if len(parts) == 3 and parts[1].isdigit():
            with contextlib.suppress(UnicodeDecodeError):
                return Entry(parts[0].decode(), int(parts[1]))
    return Entry("", -1)


class History:
    def __init__(self, path: str) -> None:
        self.file: TextIO = open(path, "a", buffering=1 << 16)  # noqa: SIM115  (closed by close())
        self.flushed_s = time.monotonic()

    def write(self, **line: Any) -> None:
        self.file.write(json.dumps(line, separators=(",", ":")) + "\n")
        now = time.monotonic()
        if now - self.flushed_s >= FLUSH_EVERY_S:
            self.file.flush()
            self.flushed_s = now

    def flush(self) -> None:
        """Now, whatever the interval (before an action that must not outlive the lines written before it)."""
        self.file.flush()
        self.flushed_s = time.monotonic()

    def close(self) -> None:
        self.file.close()


def _log_to(path: str) -> None:
    """This process's stderr (Python's and librdkafka's own log) goes to ``path``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    os.close(fd)


def producer_main(job: ProducerJob) -> None:
    """Send ``rate`` msg/s round-robin over the partitions until ``end_s``, recording every outcome."""
    from confluent_kafka import KafkaError, KafkaException, Producer

    _log_to(job.history.removesuffix(".jsonl") + ".log")
    history = History(job.history)
    fatal: list[str] = []

    def on_error(err: Any) -> None:
        if err.fatal():
            fatal.append(err.name())

    def on_delivery(err: Any, msg: Any) -> None:
        now = time.monotonic()
        entry = decode(msg.value())
        if err is None:
            history.write(
                k="ack",
                pr=entry.producer,
                s=entry.seq,
                p=msg.partition(),
                o=msg.offset(),
                ts=now - msg.latency(),
                ta=now,
            )
        else:
            history.write(
                k="err", pr=entry.producer, s=entry.seq, p=msg.partition(), e=err.name(), fatal=err.fatal(), ta=now
            )

    def make() -> Any:
        return Producer(
            {
                "bootstrap.servers": job.bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "message.timeout.ms": MESSAGE_TIMEOUT_MS,
                "error_cb": on_error,
                "client.id": f"chaos-producer-{job.index}",
                "log_level": LOG_LEVEL,
            }
        )

    def fatal_of(e: KafkaException) -> bool:
        """A fatal error (raised by poll() or produce(); produce() says only _FATAL once the instance is dead)."""
        err = e.args[0] if e.args else None
        if isinstance(err, KafkaError) and (err.fatal() or err.code() == KafkaError._FATAL):
            fatal.append(err.name())
            return True
        return False

    def fatal_name() -> str:
        """The broker's error behind a fatal one: produce() says only _FATAL; error_cb (served by poll) says why."""
        with contextlib.suppress(KafkaException):
            producer.poll(0)
        return next((n for n in fatal if n != "_FATAL"), fatal[0])

    def poll(timeout_s: float) -> None:
        try:
            producer.poll(timeout_s)
        except KafkaException as e:  # a fatal error is raised from poll() too; others are not expected
            if not fatal_of(e):
                raise

    def drain(timeout_s: float) -> None:
        with contextlib.suppress(KafkaException, RuntimeError):
            producer.purge()  # what is still outstanding is reported as failed (its outcome is unknown)
        deadline = time.monotonic() + timeout_s
        while len(producer) and time.monotonic() < deadline:
            poll(0.1)

    incarnation = 0
    producer = make()
    seq = 0
    time.sleep(max(0.0, job.start_s - time.monotonic()))
    try:
        while time.monotonic() < job.end_s:
            if fatal and incarnation < INCARNATIONS_MAX:
                history.write(k="fatal", pr=f"{job.index}.{incarnation}", e=fatal_name(), ta=time.monotonic())
                drain(FATAL_DRAIN_S)
                fatal.clear()
                incarnation += 1
                producer = make()
            due = int((time.monotonic() - job.start_s) * job.rate)
            while seq < due and not fatal:
                value = encode(f"{job.index}.{incarnation}", seq, job.message_bytes)
                try:
                    producer.produce(
                        job.topic, value, partition=(seq + job.index) % job.partitions, on_delivery=on_delivery
                    )
                except BufferError:
                    break
                except KafkaException as e:
                    if not fatal_of(e):
                        raise
                    break
                seq += 1
            poll(POLL_S)
        deadline = time.monotonic() + max(0.0, job.flush_s)
        while len(producer) and not fatal and time.monotonic() < deadline:
            poll(0.1)
        if fatal:
            history.write(k="fatal", pr=f"{job.index}.{incarnation}", e=fatal_name(), ta=time.monotonic())
        drain(FATAL_DRAIN_S)
    finally:
        history.close()


def consumer_main(job: ConsumerJob) -> None:
    """Read every partition from the start until ``end_s``, recording each record and each new high watermark."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    _log_to(job.history.removesuffix(".jsonl") + ".log")
    history = History(job.history)
    consumer = Consumer(
        {
            "bootstrap.servers": job.bootstrap,
            "group.id": f"chaos-consumer-{job.index}",  # required by the client; no group protocol is used
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 100,
            "client.id": f"chaos-consumer-{job.index}",
            "log_level": LOG_LEVEL,
        }
    )
    tps = [TopicPartition(job.topic, p, OFFSET_BEGINNING) for p in range(job.partitions)]
    consumer.assign(tps)
    last_hw: dict[int, int] = {}
    sampled_s = 0.0
    try:
        while time.monotonic() < job.end_s:
            messages = consumer.consume(CONSUME_BATCH, CONSUME_WAIT_S)
            now = time.monotonic()
            for m in messages:
                if m.error() is None:
                    e = decode(m.value())
                    history.write(k="r", p=m.partition(), o=m.offset(), pr=e.producer, s=e.seq, ta=now)
            if now - sampled_s >= HW_SAMPLE_S:
                sampled_s = now
                for tp in tps:
                    _, high = consumer.get_watermark_offsets(TopicPartition(job.topic, tp.partition), cached=True)
                    if high >= 0 and last_hw.get(tp.partition) != high:
                        last_hw[tp.partition] = high
                        history.write(k="hw", p=tp.partition, hw=high, ta=now)
    finally:
        consumer.close()
        history.close()


@dataclass(frozen=True, slots=True)
class FinalRead:
    partitions: dict[int, FinalPartition]
    note: str  # why the read is incomplete, or ""


def final_read(bootstrap: str, topic: str, partitions: int, timeout_s: float) -> FinalRead:
    """Every partition from its log start to its high watermark (as the leader gives it now), through the leaders."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "chaos-final-read",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    deadline = time.monotonic() + timeout_s
    bounds: dict[int, tuple[int, int]] = {}
    note = ""
    try:
        for p in range(partitions):
            while p not in bounds:
                try:
                    bounds[p] = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                except KafkaException as e:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"no offsets for p{p}: {e}") from None
                    time.sleep(0.5)
        entries: dict[int, dict[int, Entry]] = {p: {} for p in range(partitions)}
        todo = {p for p, (low, high) in bounds.items() if high > low}
        consumer.assign([TopicPartition(topic, p, bounds[p][0]) for p in sorted(todo)])
        while todo and time.monotonic() < deadline:
            for m in consumer.consume(CONSUME_BATCH, CONSUME_WAIT_S):
                if m.error() is not None:
                    continue
                part, o = m.partition(), m.offset()
                assert part is not None and o is not None
                if o < bounds[part][1]:
                    entries[part][o] = decode(m.value())
                if o + 1 >= bounds[part][1]:
                    todo.discard(part)
        if todo:
            note = f"the final read did not reach the high watermark of partitions {sorted(todo)} in {timeout_s:.0f} s"
    finally:
        consumer.close()
    return FinalRead(
        {
            p: FinalPartition(high_watermark=bounds[p][1], log_start_offset=bounds[p][0], entries=entries[p])
            for p in bounds
        },
        note,
    )


# ---- reading histories back -----------------------------------------------------------------------------------


class AckWatch:
    """Follows the producers' histories while they are written (complete lines only) and keeps, per partition, the
    latest send time of an acknowledged message: whether produce works again after a fault, seen by the producers
    themselves (their files are flushed every ``FLUSH_EVERY_S``, so it is known that much later)."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.positions = {p: 0 for p in paths}
        self.latest_sent_s: dict[int, float] = {}

    def poll(self) -> None:
        for path in self.paths:
            with contextlib.suppress(FileNotFoundError), open(path, "rb") as f:
                f.seek(self.positions[path])
                data = f.read()
            end = data.rfind(b"\n") + 1
            self.positions[path] += end
            for line in data[:end].splitlines():
                if line.startswith(b'{"k":"ack"'):
                    d = json.loads(line)
                    p = d["p"]
                    self.latest_sent_s[p] = max(self.latest_sent_s.get(p, 0.0), d["ts"])

    def available_since(self, since_s: float, partitions: int) -> bool:
        """Every partition acknowledged a message sent at or after ``since_s``."""
        self.poll()
        return all(self.latest_sent_s.get(p, -1.0) >= since_s for p in range(partitions))


def history_lines(path: Path) -> Iterator[dict[str, Any]]:
    with open(path) as f:
        for line in f:
            with contextlib.suppress(ValueError):  # a client killed mid-write leaves a torn last line
                yield json.loads(line)


def load_producer(path: Path) -> tuple[list[Ack], list[ProduceError]]:
    acks: list[Ack] = []
    errors: list[ProduceError] = []
    for d in history_lines(path):
        if d["k"] == "ack":
            acks.append(Ack(d["pr"], d["s"], d["p"], d["o"], d["ts"], d["ta"]))
        elif d["k"] == "err":
            errors.append(ProduceError(d["pr"], d["s"], d["p"], d["e"], d["fatal"], d["ta"]))
        elif d["k"] == "fatal":  # the producer instance ended: counted once per instance by the checker
            errors.append(ProduceError(d["pr"], -1, -1, d["e"], True, d["ta"]))
    return acks, errors


def load_consumer(path: Path) -> tuple[list[Seen], list[HwSeen]]:
    seen: list[Seen] = []
    hws: list[HwSeen] = []
    for d in history_lines(path):
        if d["k"] == "r":
            seen.append(Seen(d["p"], d["o"], d["pr"], d["s"], d["ta"]))
        elif d["k"] == "hw":
            hws.append(HwSeen(d["p"], d["hw"], d["ta"]))
    return seen, hws
