"""Runs a workload's steps against each broker and turns what the clients report into CSV rows.

For every (broker, step): a fresh broker in its own data directory, the step's topics, consumer processes and then
producer processes started together at a common instant, a warm-up that is not measured, the measured window, a
bounded wait for acknowledgements and for the consumers to read everything. Around it, the broker's processes are
sampled (CPU seconds, peak resident memory summed over the supervisor and its children). Client processes report
their own CPU, so a client-bound result shows as such.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import dataclasses
import multiprocessing as mp
import os
import queue
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import clients
from bench.clients import Load, Report
from bench.peers import Broker, Rafka
from bench.workload import Step, Workload

STARTUP_LEAD_S = 2.0  # client processes are spawned (a fresh interpreter each) before the common start
ACK_GRACE_S = 30.0
CONSUME_GRACE_S = 60.0
SAMPLE_INTERVAL_S = 0.25
TOPIC_READY_TIMEOUT_S = 120.0
RECOVERY_WAIT_MAX_S = 600.0  # a restarted broker that holds less than was acknowledged by then has lost data

COLUMNS = [
    "timestamp",
    "git_commit",
    "broker",
    "broker_version",
    "durability",
    "listener",
    "workload",
    "step",
    "message_size",
    "partitions",
    "shards",
    "producers",
    "consumers",
    "acks",
    "compression",
    "target_rate",
    "achieved_msgs_s",
    "achieved_mb_s",
    "target_attainment_pct",
    "consumed_msgs_s",
    "consumed_mb_s",
    "produce_p50_us",
    "produce_p95_us",
    "produce_p99_us",
    "produce_max_us",
    "e2e_p50_us",
    "e2e_p95_us",
    "e2e_p99_us",
    "e2e_max_us",
    "messages_acked",
    "messages_consumed",
    "errors",
    "broker_cpu_s",
    "broker_peak_rss_mb",
    "client_cpu_s",
    "window_s",
    "recovery_s",
    "cleaner_read_mb_s",
    "cleaner_s",
    "size_before_mb",
    "size_after_mb",
    "produce_p99_ratio",
    "commit_p50_us",
    "commit_p99_us",
    "rebalance_s",
    "note",
]


@dataclass(frozen=True)
class Overrides:
    """Command-line bounds over a workload's own numbers (tests and quick looks use them)."""

    duration_s: float | None = None
    warmup_s: float | None = None
    messages_max: int | None = None
    partitions_max: int | None = None
    data_mb: int | None = None
    keys: int | None = None


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            timeout=10,
            check=False,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.decode().strip() or "unknown"


def percentiles(latencies_us: array.array[int]) -> dict[str, float]:
    """p50/p95/p99/max of a latency array (nearest rank); empty -> blanks."""
    if not len(latencies_us):
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "max": float("nan")}
    values = sorted(latencies_us)
    n = len(values)

    def rank(q: float) -> float:
        return float(values[min(n - 1, max(0, int(q * n + 0.5) - 1))])

    return {"p50": rank(0.50), "p95": rank(0.95), "p99": rank(0.99), "max": float(values[-1])}


class ResourceSampler:
    """Peak resident memory of a broker's processes (summed), sampled in a thread; CPU seconds between start and
    stop (summed over the processes alive at each end)."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._cpu_start = 0.0

    def _cpu(self) -> float:
        total = 0.0
        for p in self.broker.processes():
            with contextlib.suppress(Exception):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = 0
            for p in self.broker.processes():
                with contextlib.suppress(Exception):
                    rss += p.memory_info().rss
            self.peak_rss = max(self.peak_rss, rss)
            self._stop.wait(SAMPLE_INTERVAL_S)

    def __enter__(self) -> ResourceSampler:
        self._cpu_start = self._cpu()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.cpu_s = self._cpu() - self._cpu_start
        self._stop.set()
        self._thread.join()

    def columns(self) -> dict[str, float]:
        return {"broker_cpu_s": round(self.cpu_s, 2), "broker_peak_rss_mb": round(self.peak_rss / 1e6, 1)}


# ---- client processes ------------------------------------------------------------------------------------------


def _producer_main(load: Load, out: Any) -> None:
    try:
        out.put(("producer", load.client_index, clients.produce(load)))
    except Exception as e:  # noqa: BLE001  (reported as the step's error, not a hung run)
        out.put(("producer", load.client_index, Report(errors=1, error_text=f"{type(e).__name__}: {e}")))


def _consumer_main(load: Load, expected: Any, out: Any) -> None:
    try:
        out.put(("consumer", load.client_index, clients.consume(load, lambda: int(expected.value))))
    except Exception as e:  # noqa: BLE001
        out.put(("consumer", load.client_index, Report(errors=1, error_text=f"{type(e).__name__}: {e}")))


class ClientGroup:
    """Producer and consumer processes of one step; ``close`` kills any still running (Ctrl-C, timeouts)."""

    def __init__(self) -> None:
        self.ctx = mp.get_context("spawn")
        self.results = self.ctx.Queue()
        self.expected = self.ctx.Value("q", -1)
        self.procs: list[Any] = []

    def start(self, producers: list[Load], consumers: list[Load]) -> None:
        for load in consumers:
            self._spawn(_consumer_main, (load, self.expected, self.results), f"bench-consumer-{load.client_index}")
        for load in producers:
            self._spawn(_producer_main, (load, self.results), f"bench-producer-{load.client_index}")

    def _spawn(self, target: Callable[..., None], args: tuple[Any, ...], name: str) -> None:
        proc = self.ctx.Process(target=target, args=args, name=name, daemon=True)
        proc.start()
        self.procs.append(proc)

    def collect(self, role: str, count: int, deadline: float) -> list[Report]:
        """``count`` reports of ``role`` ("producer"/"consumer") by ``deadline`` (monotonic s); a client that died
        or hung counts as one error each."""
        got: dict[int, Report] = {}
        pending: list[tuple[str, int, Report]] = []
        while len(got) < count:
            try:
                kind, index, report = self.results.get(timeout=max(0.05, min(1.0, deadline - time.monotonic())))
            except queue.Empty:
                if time.monotonic() >= deadline:
                    break
                continue
            if kind == role:
                got[index] = report
            else:
                pending.append((kind, index, report))
        for item in pending:
            self.results.put(item)
        missing = count - len(got)
        return [
            *got.values(),
            *(Report(errors=1, error_text=f"a {role} process gave no report") for _ in range(missing)),
        ]

    def close(self) -> None:
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()
            proc.join(5)


# ---- one step --------------------------------------------------------------------------------------------------


def topic_names(step: Step) -> tuple[str, ...]:
    return tuple(f"bench-{step.workload.name}-{step.index}-{i}" for i in range(step.workload.topics))


def create_topics(
    broker: Broker, topics: tuple[str, ...], partitions: int, configs: dict[str, str] | None = None
) -> None:
    """Create the step's topics (Kafka: with ``configs``) and wait until every partition has a leader (Kafka) / the
    stream exists (NATS)."""
    if broker.protocol == "kafka":
        from confluent_kafka.admin import AdminClient
        from confluent_kafka.cimpl import NewTopic

        admin = AdminClient({**broker.client_config, "bootstrap.servers": broker.address})
        new = [NewTopic(t, partitions, 1, config=configs or {}) for t in topics]
        for topic, future in admin.create_topics(new).items():
            try:
                future.result(TOPIC_READY_TIMEOUT_S)
            except Exception as e:  # noqa: BLE001  (librdkafka raises KafkaException)
                raise RuntimeError(f"creating {topic} on {broker.name}: {e}") from None
        deadline = time.monotonic() + TOPIC_READY_TIMEOUT_S
        while time.monotonic() < deadline:
            md = admin.list_topics(timeout=10)
            if all(
                t in md.topics
                and len(md.topics[t].partitions) == partitions
                and all(p.leader >= 0 for p in md.topics[t].partitions.values())
                for t in topics
            ):
                return
            time.sleep(0.2)
        raise RuntimeError(f"the topics on {broker.name} had no leaders within {TOPIC_READY_TIMEOUT_S:.0f} s")
    if broker.protocol == "nats":
        asyncio.run(_nats_streams(broker.address, topics))


async def _nats_streams(address: str, topics: tuple[str, ...]) -> None:
    import nats
    from nats.js.api import StorageType, StreamConfig

    nc = await nats.connect(f"nats://{address}", max_reconnect_attempts=0)
    js = nc.jetstream()
    for topic in topics:
        await js.add_stream(
            StreamConfig(name=clients.stream_name(topic), subjects=[f"{topic}.>"], storage=StorageType.FILE)
        )
    await nc.close()


class StepRunner:
    def __init__(self, workload: Workload, overrides: Overrides, work_dir: Path, commit: str) -> None:
        self.workload = workload
        self.o = overrides
        self.work_dir = work_dir
        self.commit = commit
        self.group: ClientGroup | None = None

    def setting(self, name: str) -> Any:
        """A workload number, or its command-line override."""
        value = getattr(self.o, name)
        return getattr(self.workload, name) if value is None else value

    def partitions(self, step: Step) -> int:
        cap = self.o.partitions_max
        return step.partitions if cap is None else min(step.partitions, cap)

    def base_row(self, broker: Broker, step: Step) -> dict[str, Any]:
        w = self.workload
        return {
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
            "git_commit": self.commit,
            "broker": broker.name,
            "broker_version": broker.version,
            "durability": broker.durability,
            "listener": broker.listener,
            "workload": w.name,
            "step": step.label,
            "message_size": w.message_size,
            "partitions": self.partitions(step),
            "shards": step.shards if isinstance(broker, Rafka) else "",
            "producers": w.producers,
            "consumers": w.consumers,
            "acks": w.acks,
            "compression": w.compression,
            "target_rate": step.rate,
        }

    def loads(
        self, broker: Broker, step: Step, topics: tuple[str, ...], rate_each: float, consumers: int
    ) -> tuple[list[Load], list[Load]]:
        w = self.workload
        duration, warmup = float(self.setting("duration_s")), float(self.setting("warmup_s"))
        start = time.monotonic_ns() + int(STARTUP_LEAD_S * 1e9)
        end = start + int(duration * 1e9)

        def load(i: int, clients_n: int, deadline_s: float, cap: int) -> Load:
            return Load(
                broker.protocol,
                broker.address,
                topics,
                self.partitions(step),
                w.message_size,
                w.acks,
                w.compression,
                w.linger_ms,
                w.batch_size,
                rate_each,
                cap,
                start,
                start + int(warmup * 1e9),
                end,
                end + int(deadline_s * 1e9),
                i,
                clients_n,
                client_config=tuple(broker.client_config.items()),
            )

        cap_each = max(1, int(self.setting("messages_max")) // w.producers)
        producers = [load(i, w.producers, ACK_GRACE_S, cap_each) for i in range(w.producers)]
        readers = [load(i, consumers, CONSUME_GRACE_S, 0) for i in range(consumers)]
        return producers, readers

    def stream(self, broker: Broker, step: Step) -> dict[str, Any]:
        """One stream step: produce (rate-limited or flat out) and consume at once."""
        w = self.workload
        row = self.base_row(broker, step)
        with self.running(broker, step):
            topics = topic_names(step)
            create_topics(broker, topics, self.partitions(step))
            rate_each = step.rate / w.producers if step.rate else 0.0
            producers, consumers = self.loads(broker, step, topics, rate_each, w.consumers)
            self.group = group = ClientGroup()
            with ResourceSampler(broker) as sampler:
                group.start(producers, consumers)
                end_s = time.monotonic() + STARTUP_LEAD_S + float(self.setting("duration_s"))
                sent = group.collect("producer", len(producers), end_s + ACK_GRACE_S + 15)
                group.expected.value = sum(r.acked for r in sent)
                read = group.collect("consumer", len(consumers), end_s + CONSUME_GRACE_S + 15)
            row.update(self.measures(sent, read, step.rate), **sampler.columns())
            return row

    @contextlib.contextmanager
    def running(self, broker: Broker, step: Step) -> Iterator[Path]:
        """The broker started fresh for ``step`` (its data directory is yielded); on the way out, however it is left,
        the step's client processes are killed and the broker stopped."""
        data_dir = self.work_dir / f"{broker.name}-{step.index}"
        broker.start(data_dir, shards=step.shards)
        try:
            yield data_dir
        finally:
            if self.group is not None:
                self.group.close()
                self.group = None
            broker.stop()

    def measures(self, sent: list[Report], read: list[Report], target: int) -> dict[str, Any]:
        size = self.workload.message_size
        out: dict[str, Any] = {}
        measured = sum(r.measured for r in sent)
        window = _window(sent)
        achieved = measured / window if window > 0 else 0.0
        out["achieved_msgs_s"] = round(achieved, 1)
        out["achieved_mb_s"] = round(achieved * size / 1e6, 2)
        out["target_attainment_pct"] = round(100 * achieved / target, 1) if target else ""
        consumed = sum(r.measured for r in read)
        consume_window = _window(read)
        rate = consumed / consume_window if consume_window > 0 else 0.0
        out["consumed_msgs_s"] = round(rate, 1) if read else ""
        out["consumed_mb_s"] = round(rate * size / 1e6, 2) if read else ""
        for prefix, reports in (("produce", sent), ("e2e", read)):
            lat: array.array[int] = array.array("Q")
            for r in reports:
                lat.frombytes(r.latencies_us)
            for name, value in percentiles(lat).items():
                out[f"{prefix}_{name}_us"] = "" if value != value else int(value)  # NaN: no sample
        out["messages_acked"] = sum(r.acked for r in sent)
        out["messages_consumed"] = sum(r.acked for r in read) if read else ""
        lost = 0
        if read and out["messages_consumed"] < out["messages_acked"]:
            lost = out["messages_acked"] - out["messages_consumed"]
        out["errors"] = sum(r.errors for r in [*sent, *read]) + lost
        out["client_cpu_s"] = round(sum(r.cpu_s for r in [*sent, *read]), 2)
        out["window_s"] = round(window, 2)
        notes = [r.error_text for r in [*sent, *read] if r.error_text]
        if lost:
            notes.append(f"{lost} acknowledged message(s) not read back")
        out["note"] = "; ".join(dict.fromkeys(notes))[:500]
        return out

    def recovery(self, broker: Broker, step: Step) -> dict[str, Any]:
        """Fill the broker with ``data_mb`` of messages, SIGKILL it, start it again on the same data: seconds from
        the restart to every acknowledged message being readable again."""
        w = self.workload
        row = self.base_row(broker, step)
        with self.running(broker, step) as data_dir:
            topics = topic_names(step)
            partitions = self.partitions(step)
            create_topics(broker, topics, partitions)
            count = max(1, int(self.setting("data_mb")) * 1_000_000 // w.message_size)
            producers, _ = self.loads(broker, step, topics, 0.0, 0)
            cap_each = max(1, min(int(self.setting("messages_max")), count) // w.producers)
            producers = [dataclasses.replace(p, messages_max=cap_each, warm_end_ns=p.start_ns) for p in producers]
            self.group = group = ClientGroup()
            group.start(producers, [])
            end_s = time.monotonic() + STARTUP_LEAD_S + float(self.setting("duration_s"))
            sent = group.collect("producer", len(producers), end_s + ACK_GRACE_S + 15)
            row.update(self.measures(sent, [], 0))
            acked = int(row["messages_acked"])
            broker.kill()
            with ResourceSampler(broker) as sampler:
                began = time.monotonic()
                broker.start(data_dir, shards=step.shards, fresh=False)
                back = wait_readable(broker, topics, partitions, acked, began + RECOVERY_WAIT_MAX_S)
                row["recovery_s"] = round(time.monotonic() - began, 2)
            row.update(sampler.columns())
            if back < acked:
                row["errors"] = int(row["errors"]) + acked - back
                row["note"] = f"{acked - back} acknowledged message(s) missing after the restart"
            else:
                row["note"] = f"{acked} messages ({acked * w.message_size / 1e6:.0f} MB) all readable after SIGKILL"
            return row


def _window(reports: list[Report]) -> float:
    """Seconds from the first measured event of any client to the last of any."""
    firsts = [r.first_ns for r in reports if r.first_ns]
    lasts = [r.last_ns for r in reports if r.last_ns]
    if not firsts or not lasts:
        return 0.0
    return (max(lasts) - min(firsts)) / 1e9


def wait_readable(broker: Broker, topics: tuple[str, ...], partitions: int, acked: int, deadline: float) -> int:
    """Poll the restarted broker until it holds ``acked`` messages again (or the deadline); how many it holds."""
    held = 0
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):  # refused, loading, not leader yet: the broker is still recovering
            held = _count(broker, topics, partitions)
            if held >= acked:
                return held
        time.sleep(0.05)
    return held


def _count(broker: Broker, topics: tuple[str, ...], partitions: int) -> int:
    if broker.protocol == "kafka":
        from confluent_kafka import Consumer, TopicPartition

        c = Consumer({**broker.client_config, "bootstrap.servers": broker.address, "group.id": "bench-recovery"})
        try:
            return sum(
                c.get_watermark_offsets(TopicPartition(t, p), timeout=2)[1] for t in topics for p in range(partitions)
            )
        finally:
            c.close()
    if broker.protocol == "redis":
        import redis

        client = redis.Redis(host="127.0.0.1", port=broker.port, socket_timeout=5)
        return sum(int(client.xlen(f"{t}:{p}")) for t in topics for p in range(partitions))
    return asyncio.run(_nats_count(broker.address, topics))


async def _nats_count(address: str, topics: tuple[str, ...]) -> int:
    import nats

    nc = await nats.connect(f"nats://{address}", max_reconnect_attempts=0, connect_timeout=2)
    try:
        js = nc.jetstream()
        return sum([(await js.stream_info(clients.stream_name(t))).state.messages for t in topics])
    finally:
        await nc.close()


# ---- the machine's limits --------------------------------------------------------------------------------------


def limits(workload: Workload, overrides: Overrides, work_dir: Path, commit: str) -> Iterator[dict[str, Any]]:
    """Loopback TCP bandwidth, sequential write+fsync bandwidth, and 4 KiB write+fsync per second, each for the
    workload's duration: the ceilings the brokers' numbers should be read against."""
    duration = overrides.duration_s or workload.duration_s
    base = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": commit,
        "broker": "machine",
        "broker_version": os.uname().release,
        "durability": "",
        "workload": workload.name,
        "errors": 0,
    }
    mb_s = _loopback_mb_s(duration)
    yield {**base, "step": "loopback TCP, 1 MiB sends", "achieved_mb_s": round(mb_s, 1)}
    mb_s = _disk_mb_s(work_dir, duration)
    yield {**base, "step": "disk: 1 MiB writes then fsync", "achieved_mb_s": round(mb_s, 1)}
    per_s = _fsyncs_per_s(work_dir, duration)
    yield {**base, "step": "disk: 4 KiB write + fsync", "achieved_msgs_s": round(per_s, 1), "message_size": 4096}


def _loopback_mb_s(duration: float) -> float:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    total = 0
    chunk = b"\0" * (1 << 20)

    def sink() -> None:
        nonlocal total
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(1 << 20):
                total += len(data)

    thread = threading.Thread(target=sink, daemon=True)
    thread.start()
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as s:
        while time.monotonic() - start < duration:
            s.sendall(chunk)
    thread.join(10)
    elapsed = time.monotonic() - start
    server.close()
    return total / elapsed / 1e6


def _disk_mb_s(work_dir: Path, duration: float) -> float:
    chunk = os.urandom(1 << 20)
    with tempfile.NamedTemporaryFile(dir=work_dir) as f:
        start = time.monotonic()
        written = 0
        while time.monotonic() - start < duration and written < (4 << 30):
            f.write(chunk)
            written += len(chunk)
        f.flush()
        os.fsync(f.fileno())
        return written / (time.monotonic() - start) / 1e6


def _fsyncs_per_s(work_dir: Path, duration: float) -> float:
    block = os.urandom(4096)
    with tempfile.NamedTemporaryFile(dir=work_dir) as f:
        start = time.monotonic()
        count = 0
        while time.monotonic() - start < duration:
            f.write(block)
            f.flush()
            os.fsync(f.fileno())
            count += 1
        return count / (time.monotonic() - start)
