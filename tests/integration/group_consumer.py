"""A consumer process for group tests: ``python -m tests.integration.group_consumer BOOTSTRAP GROUP TOPIC OUT``.

confluent-kafka ``subscribe`` with manual synchronous commits after every message, so a message is counted once its
offset is committed. Writes one JSON line per event to OUT (flushed as it goes, so a SIGKILLed process leaves what
it did): {"assigned": [...]} / {"revoked": [...]} (incremental with the consumer protocol and cooperative
assignors, everything with eager ones) / {"p": partition, "o": offset, "v": value}. ``--protocol consumer`` uses
KIP-848. Stops on SIGTERM (closing the consumer: it leaves the group) or after ``--max-s`` seconds.
"""

from __future__ import annotations

import argparse
import json
import signal
import time
from typing import Any

from confluent_kafka import Consumer, KafkaException


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bootstrap")
    ap.add_argument("group")
    ap.add_argument("topic")
    ap.add_argument("out")
    ap.add_argument("--max-s", type=float, default=120)
    ap.add_argument("--session-timeout-ms", type=int, default=10_000)
    ap.add_argument("--assignor", default="range")
    ap.add_argument("--instance-id", default="")
    ap.add_argument("--protocol", default="classic", choices=["classic", "consumer"], help="group.protocol")
    args = ap.parse_args()
    stop = False

    def on_term(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    out = open(args.out, "a", buffering=1)  # noqa: SIM115  (line-buffered for the whole run)
    conf: dict[str, object] = {
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    }
    if args.protocol == "consumer":  # KIP-848: timeouts and the assignor are the coordinator's
        conf["group.protocol"] = "consumer"
    else:
        conf.update(
            {
                "session.timeout.ms": args.session_timeout_ms,
                "heartbeat.interval.ms": 500,
                "partition.assignment.strategy": args.assignor,
            }
        )
    if args.instance_id:
        conf["group.instance.id"] = args.instance_id
    consumer = Consumer(conf)

    def assigned(_: Any, parts: list[Any]) -> None:
        out.write(json.dumps({"assigned": sorted(p.partition for p in parts)}) + "\n")

    def revoked(_: Any, parts: list[Any]) -> None:
        out.write(json.dumps({"revoked": sorted(p.partition for p in parts)}) + "\n")

    consumer.subscribe([args.topic], on_assign=assigned, on_revoke=revoked)
    deadline = time.monotonic() + args.max_s
    while not stop and time.monotonic() < deadline:
        m = consumer.poll(0.2)
        if m is None or m.error() is not None:
            continue
        try:
            consumer.commit(message=m, asynchronous=False)
        except KafkaException as e:  # a rebalance took the partition: it is consumed again by its new owner
            out.write(json.dumps({"commit_failed": str(e), "p": m.partition(), "o": m.offset()}) + "\n")
            continue
        out.write(json.dumps({"p": m.partition(), "o": m.offset(), "v": m.value().decode()}) + "\n")
    consumer.close()
    out.write(json.dumps({"closed": True}) + "\n")


if __name__ == "__main__":
    main()
