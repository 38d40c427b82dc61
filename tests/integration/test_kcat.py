"""Debian's kcat (librdkafka 2.0, Metadata v4, pre-2.2 tagged-field parsing) against a real broker process."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import Broker
from tests.integration.helpers import BASE_TS

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed (bash ops/test.sh installs it)"),
]


def kcat(*args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(["kcat", *args], input=stdin, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize(("acks", "codec"), [("0", "none"), ("1", "snappy"), ("all", "lz4"), ("all", "zstd")])
def test_produce_consume(broker: Broker, topic_name: str, acks: str, codec: str) -> None:
    lines = "".join(f"key{i}:value{i}\n" for i in range(300))
    kcat(
        "-b",
        broker.bootstrap,
        "-P",
        "-t",
        topic_name,
        "-p",
        "0",
        "-K",
        ":",
        "-X",
        f"acks={acks}",
        "-z",
        codec,
        "-H",
        "origin=kcat",
        stdin=lines,
    )
    out = kcat(
        "-b", broker.bootstrap, "-C", "-t", topic_name, "-p", "0", "-o", "beginning", "-e", "-f", "%o|%k|%s|%h\n"
    )
    rows = [line.split("|") for line in out.splitlines()]
    assert [(int(o), k, v, h) for o, k, v, h in rows] == [
        (i, f"key{i}", f"value{i}", "origin=kcat") for i in range(300)
    ]


def test_metadata_and_offsets_by_time(broker: Broker, topic_name: str) -> None:
    # kcat -P cannot set timestamps from stdin; produce with librdkafka through confluent-kafka, read with kcat.
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(50):
        p.produce(topic_name, value=b"m%d" % i, partition=0, timestamp=BASE_TS + 1000 * i)
    assert p.flush(30) == 0
    md = kcat("-b", broker.bootstrap, "-L", "-t", topic_name)
    assert f'topic "{topic_name}" with 1 partitions' in md and "leader 0" in md
    out = kcat(
        "-b", broker.bootstrap, "-C", "-t", topic_name, "-p", "0", "-o", f"s@{BASE_TS + 30_000}", "-e", "-f", "%o %s\n"
    )
    assert out.splitlines()[0] == "30 m30"
    assert len(out.splitlines()) == 20


def test_balanced_consumer_group(broker: Broker, topic_name: str) -> None:
    """kcat -G (librdkafka 2.0's balanced consumer): it joins the group, consumes, commits on exit; the next run
    of the group starts after what the first committed."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for f in admin.create_topics([NewTopic(topic_name, 2, 1)]).values():
        f.result(timeout=30)
    for p in (0, 1):
        lines = "".join(f"m{p}-{i}\n" for i in range(10))
        kcat("-b", broker.bootstrap, "-P", "-t", topic_name, "-p", str(p), stdin=lines)

    def group_run(count: int) -> list[str]:
        out = kcat(
            "-b",
            broker.bootstrap,
            "-G",
            "kcat-group",
            topic_name,
            "-c",
            str(count),
            "-f",
            "%s\n",
            "-X",
            "auto.offset.reset=earliest",
        )
        return sorted(out.split())

    assert group_run(20) == sorted(f"m{p}-{i}" for p in (0, 1) for i in range(10))
    for p in (0, 1):
        kcat("-b", broker.bootstrap, "-P", "-t", topic_name, "-p", str(p), stdin=f"n{p}\n")
    assert group_run(2) == ["n0", "n1"]
