"""First throughput benchmark: librdkafka producers in separate processes, then one consumer reading it all back.

    python bench/produce_consume.py                       # starts its own broker in a temporary directory
    python bench/produce_consume.py --bootstrap HOST:PORT --broker-pid PID
    python bench/produce_consume.py --help

Every run is bounded by a message count and a time limit, listens on 127.0.0.1 only, and cleans up what it started.
It prints produced and consumed MB/s, the broker's CPU seconds per MB (psutil, over the broker process) and the
clients' CPU seconds, and appends one CSV row to --out. The full harness with peers is a later issue.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _producer(
    bootstrap: str, topic: str, count: int, size: int, acks: str, linger_ms: int, deadline: float, q: Any
) -> None:
    from confluent_kafka import Producer

    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": acks,
            "linger.ms": linger_ms,
            "batch.size": 1_000_000,
            "queue.buffering.max.kbytes": 512 * 1024,
            "compression.type": "none",
        }
    )
    payload = os.urandom(size)
    errors = 0
    acked = 0

    def on_delivery(err: Any, _msg: Any) -> None:
        nonlocal errors, acked
        if err is not None:
            errors += 1
        else:
            acked += 1

    started = time.perf_counter()
    sent = 0
    while sent < count and time.time() < deadline:
        try:
            p.produce(topic, value=payload, on_delivery=on_delivery)
            sent += 1
        except BufferError:
            p.poll(0.001)
    p.flush(max(1.0, deadline - time.time()))
    elapsed = time.perf_counter() - started
    cpu = psutil.Process().cpu_times()
    q.put({"acked": acked, "errors": errors, "seconds": elapsed, "cpu": cpu.user + cpu.system})


def _consumer(bootstrap: str, topic: str, partitions: int, expected: int, deadline: float, q: Any) -> None:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench",
            "enable.auto.commit": False,
            "fetch.max.bytes": 52428800,
            "max.partition.fetch.bytes": 4 * 1048576,
            "queued.max.messages.kbytes": 256 * 1024,
        }
    )
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    got = 0
    nbytes = 0
    started = None
    while got < expected and time.time() < deadline:
        msgs = c.consume(10000, 0.5)
        if msgs and started is None:
            started = time.perf_counter()
        for m in msgs:
            if m.error() is None:
                got += 1
                nbytes += len(m.value() or b"")
    elapsed = time.perf_counter() - (started or time.perf_counter())
    c.close()
    cpu = psutil.Process().cpu_times()
    q.put({"consumed": got, "bytes": nbytes, "seconds": elapsed, "cpu": cpu.user + cpu.system})


def _write_lines(path: Path, count: int, size: int) -> None:
    """``count`` newline-delimited messages of ``size`` bytes (the newline is the delimiter, not payload)."""
    line = os.urandom(size).hex()[:size].encode() + b"\n"
    with path.open("wb") as f:
        for _ in range(count // 1000):
            f.write(line * 1000)
        f.write(line * (count % 1000))


def _count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def _kcat_produce(bootstrap: str, topic: str, lines: Path, args: argparse.Namespace, deadline: float) -> list[Any]:
    """``--producers`` kcat processes (librdkafka in C: far less client CPU per message than a Python loop), each
    sending the file's lines to the topic's partitions; acknowledged counts come from the partitions' end offsets."""
    import resource

    from confluent_kafka import Consumer, TopicPartition

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cmd = ["kcat", "-P", "-b", bootstrap, "-t", topic, "-l", str(lines), "-X", f"acks={args.acks}"]
    cmd += ["-X", f"linger.ms={args.linger_ms}", "-X", "queue.buffering.max.kbytes=1048576"]
    cmd += ["-X", "queue.buffering.max.messages=1000000"]
    procs = [subprocess.Popen(cmd, stderr=subprocess.PIPE) for _ in range(args.producers)]
    started = time.perf_counter()
    errors = 0
    for proc in procs:
        try:
            _, err = proc.communicate(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        errors += proc.returncode != 0
        if proc.returncode != 0:
            print(err.decode(errors="replace")[-2000:], file=sys.stderr)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # With acks=1 the high watermark (the fsynced offset under durability=fsync) may trail the last acknowledgement
    # by one group commit: wait for it to settle, bounded.
    expected = _count_lines(lines) * args.producers
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-count"})
    settle = time.monotonic() + 10
    while True:
        acked = sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(args.partitions))
        if acked >= expected or time.monotonic() > settle:
            break
        time.sleep(0.05)
    c.close()
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return [{"acked": acked, "errors": errors, "seconds": seconds, "cpu": cpu}]


def _start_broker(
    data_dir: Path, admin_port: int, shards: int, extra: list[str]
) -> tuple[subprocess.Popen[bytes], str]:
    """A node with ``shards`` shard processes on ephemeral ports; the process and shard 0's address."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rafka_shards",
            "serve",
            "--data-dir",
            str(data_dir),
            "--listen",
            "127.0.0.1:0",
            "--shards",
            str(shards),
            "--admin-listen",
            f"127.0.0.1:{admin_port}",
            "--log-level",
            "WARNING",
            *extra,
        ]
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/v1/status/ready", timeout=1):
                pass
            with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/v1/shards", timeout=5) as r:
                return proc, str(json.loads(r.read())[0]["listen"])
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the broker did not become ready within 30 s")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", help="use a running broker instead of starting one")
    ap.add_argument("--broker-pid", type=int, help="pid of that broker, for its CPU figures")
    ap.add_argument("--producers", type=int, default=2, help="producer processes (default 2)")
    ap.add_argument("--messages", type=int, default=400_000, help="messages in total (default 400,000)")
    ap.add_argument("--size", type=int, default=1024, help="message size in bytes (default 1024)")
    ap.add_argument("--partitions", type=int, default=8, help="partitions of the topic (default 8)")
    ap.add_argument(
        "--replication-factor",
        type=int,
        default=1,
        help="replicas per partition (default 1; more needs a cluster: --bootstrap to ops/cluster3.sh)",
    )
    ap.add_argument("--acks", default="all", choices=["0", "1", "all"], help="producer acks (default all)")
    ap.add_argument("--linger-ms", type=int, default=5, help="producer linger.ms (default 5)")
    ap.add_argument("--max-seconds", type=float, default=120, help="time limit for each phase (default 120)")
    ap.add_argument(
        "--client",
        choices=["python", "kcat"],
        default="python",
        help="load generator: confluent-kafka producer processes, or kcat (C) processes reading a file",
    )
    ap.add_argument("--shards", type=int, default=1, help="shard processes of the broker it starts (default 1)")
    ap.add_argument("--broker-arg", action="append", default=[], help="extra argument for `serve` (repeatable)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/produce_consume.csv"), help="CSV to append to")
    return ap


def main() -> int:
    ap = parser()
    args = ap.parse_args()
    if args.messages <= 0 or args.producers <= 0 or args.partitions <= 0 or args.size <= 0 or args.shards <= 0:
        ap.error("--messages, --producers, --partitions, --size and --shards must be positive")
    row = run(args)
    append_csv(args.out, row)
    return 0 if row["errors"] == 0 and row["consumed"] == row["messages"] else 1


def append_csv(path: Path, row: dict[str, Any]) -> None:
    """Append ``row``; a file written before a column existed is rewritten with it (blank in the old rows)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            fields = list(reader.fieldnames or [])
            old_rows = list(reader)
        if fields != list(row):
            merged = fields + [k for k in row if k not in fields]
            with path.open("w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=merged)
                w.writeheader()
                w.writerows(old_rows)
                w.writerow(row)
            return
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """One produce phase then one consume phase; the CSV row (also printed)."""
    tmp = None
    proc = None
    try:
        if args.bootstrap:
            bootstrap = args.bootstrap
            broker = psutil.Process(args.broker_pid) if args.broker_pid else None
        else:
            tmp = Path(tempfile.mkdtemp(prefix="rafka-bench-"))
            proc, bootstrap = _start_broker(tmp / "data", _free_port(), args.shards, args.broker_arg)
            broker = psutil.Process(proc.pid)
        from confluent_kafka.admin import AdminClient
        from confluent_kafka.cimpl import NewTopic

        topic = f"bench-{int(time.time())}"
        admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the futures complete
        for f in admin.create_topics([NewTopic(topic, args.partitions, args.replication_factor)]).values():
            f.result(30)

        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        if args.client == "kcat":
            # On tmpfs when there is one: writing back a big input file would compete with the broker's disk.
            shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
            tmp_input = Path(tempfile.mkstemp(prefix="rafka-bench-", suffix=".txt", dir=shm)[1])
            _write_lines(tmp_input, args.messages // args.producers, args.size)
        cpu0 = _cpu(broker)
        deadline = time.time() + args.max_seconds
        per = args.messages // args.producers
        t0 = time.perf_counter()
        if args.client == "kcat":
            try:
                results = _kcat_produce(bootstrap, topic, tmp_input, args, deadline)
            finally:
                tmp_input.unlink()
        else:
            procs = [
                ctx.Process(
                    target=_producer, args=(bootstrap, topic, per, args.size, args.acks, args.linger_ms, deadline, q)
                )
                for _ in range(args.producers)
            ]
            for p in procs:
                p.start()
            results = [q.get(timeout=args.max_seconds + 60) for _ in procs]
            for p in procs:
                p.join()
        produce_s = time.perf_counter() - t0
        cpu1 = _cpu(broker)
        acked = sum(r["acked"] for r in results)
        errors = sum(r["errors"] for r in results)
        produce_mb = acked * args.size / 1e6

        consume_deadline = time.time() + args.max_seconds
        c = ctx.Process(target=_consumer, args=(bootstrap, topic, args.partitions, acked, consume_deadline, q))
        c.start()
        cres = q.get(timeout=args.max_seconds + 60)
        c.join()
        cpu2 = _cpu(broker)
        consume_mb = cres["bytes"] / 1e6
        row = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "messages": acked,
            "shards": args.shards if proc is not None else "",
            "size": args.size,
            "partitions": args.partitions,
            "replication_factor": args.replication_factor,
            "producers": args.producers,
            "acks": args.acks,
            "linger_ms": args.linger_ms,
            "client": args.client,
            "errors": errors,
            "produce_mb_s": round(produce_mb / produce_s, 1),
            "consume_mb_s": round(consume_mb / cres["seconds"], 1) if cres["seconds"] else 0,
            "consumed": cres["consumed"],
            "broker_cpu_s_per_mb_produce": round((cpu1 - cpu0) / produce_mb, 4) if broker and produce_mb else "",
            "broker_cpu_s_per_mb_consume": round((cpu2 - cpu1) / consume_mb, 4) if broker and consume_mb else "",
            "producer_cpu_s": round(sum(r["cpu"] for r in results), 1),
            "consumer_cpu_s": round(cres["cpu"], 1),
            "produce_s": round(produce_s, 2),
            "consume_s": round(cres["seconds"], 2),
        }
        for k, v in row.items():
            print(f"{k:30} {v}")
        return row
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _cpu(p: psutil.Process | None) -> float:
    """CPU seconds of the broker: the supervisor and every shard process (live ones counted one by one)."""
    if p is None:
        return 0.0
    total = 0.0
    for proc in [p, *p.children(recursive=True)]:
        try:
            t = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


if __name__ == "__main__":
    raise SystemExit(main())
