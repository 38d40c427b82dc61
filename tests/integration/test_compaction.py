"""Compacted topics through real clients: the cleaner keeps the latest value of every key at its offset, clients
read across the gaps it leaves, keyless records and bad configs are refused, and a SIGKILL during cleaning loses
no key's latest value."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic
from kafka import KafkaConsumer
from kafka import TopicPartition as KPTopicPartition

from rafka_shards.model import ErrorCode
from rafka_shards.records.builder import Record, build_batch
from tests.conftest import Broker
from tests.integration.helpers import admin_call, raw_produce

pytestmark = pytest.mark.integration

CLEANER_ARGS = ["--log-cleaner-backoff-ms", "100"]
COMPACT = {"cleanup.policy": "compact", "segment.bytes": "4096", "min.cleanable.dirty.ratio": "0.01"}
KEYS = 40  # updated every round
COLD = 10  # written once, in the first round: their records stay where they are, before the cleaned gaps


def _create(bootstrap: str, topic: str, configs: dict[str, str]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1, config=configs)])[topic].result(30)


CODECS = ("none", "gzip", "snappy", "lz4", "zstd")


def _produce(bootstrap: str, topic: str, rounds: int, codec: str = "all") -> dict[bytes, bytes | None]:
    """``COLD`` keys once, then ``rounds`` of keyed upserts of ``KEYS`` keys (a tombstone for every 7th key in the last
    round): ``COLD + rounds * KEYS`` records, each round compressed with the next of ``CODECS`` (``codec="all"``) or
    with ``codec``. The latest value of every key."""
    producers = {
        c: Producer({"bootstrap.servers": bootstrap, "acks": "all", "compression.type": c, "linger.ms": 5})
        for c in (CODECS if codec == "all" else (codec,))
    }
    rotation = list(producers.values())
    latest: dict[bytes, bytes | None] = {}
    for k in range(COLD):
        rotation[0].produce(topic, key=b"cold-%03d" % k, value=b"cold value %03d" % k, partition=0)
        latest[b"cold-%03d" % k] = b"cold value %03d" % k
    assert rotation[0].flush(30) == 0
    for r in range(rounds):
        p = rotation[r % len(rotation)]
        for k in range(KEYS):
            key = b"key-%03d" % k
            value = None if r == rounds - 1 and k % 7 == 0 else b"value-%03d-%04d" % (k, r) + b"." * 40
            p.produce(topic, key=key, value=value, partition=0)
            latest[key] = value
        assert p.flush(30) == 0  # a batch (or a few) per round: segments roll, and the older ones can be cleaned
    return latest


def _read_confluent(bootstrap: str, topic: str, start: int = OFFSET_BEGINNING) -> list[tuple[int, bytes, bytes | None]]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "g", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, start)])
    _, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    out: list[tuple[int, bytes, bytes | None]] = []
    if high == 0:  # empty: nothing to read, and the position stays unset, so the loop below would wait it out
        c.close()
        return out
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None:
            assert m.error() is None, m.error()
            out.append((m.offset(), m.key(), m.value()))
        position = c.position([TopicPartition(topic, 0)])[0].offset
        if position >= high:
            break
    c.close()
    return out


def _latest(rows: list[tuple[int, bytes, bytes | None]]) -> dict[bytes, bytes | None]:
    latest: dict[bytes, bytes | None] = {}
    for _, key, value in rows:
        latest[key] = value
    return latest


def _wait_compacted(bootstrap: str, topic: str, produced: int) -> list[tuple[int, bytes, bytes | None]]:
    """Until a read from offset 0 returns fewer records than were produced (the cleaner ran); that read."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        rows = _read_confluent(bootstrap, topic)
        if len(rows) < produced:
            return rows
        time.sleep(0.5)
    raise AssertionError("the cleaner did not compact the topic within 120 s")


def _same_log(read: list[tuple[int, bytes, bytes | None]], rows: list[tuple[int, bytes, bytes | None]]) -> None:
    """``read`` is the log ``rows`` was read from, read later: the cleaner runs on (backoff 100 ms), so later passes
    may have removed more superseded records, never added, moved or changed one, nor a key's latest value."""
    offsets = [o for o, _, _ in read]
    assert offsets == sorted(set(offsets))
    assert set(read) <= set(rows), sorted(set(read) - set(rows))[:5]
    assert _latest(read) == _latest(rows)


def test_every_client_reads_a_compacted_partition_across_its_gaps(tmp_path: Path, topic_name: str) -> None:
    b = Broker(tmp_path / "data", CLEANER_ARGS)
    b.start()
    try:
        _create(b.bootstrap, topic_name, COMPACT)
        latest = _produce(b.bootstrap, topic_name, rounds=25)
        rows = _wait_compacted(b.bootstrap, topic_name, COLD + 25 * KEYS)
        offsets = [o for o, _, _ in rows]
        assert offsets == sorted(set(offsets)) and offsets[-1] == COLD + 25 * KEYS - 1
        assert any(b2 - a > 1 for a, b2 in itertools.pairwise(offsets))  # gaps
        assert _latest(rows) == latest  # the latest value of every key, tombstones included
        middle = offsets[len(offsets) // 2]
        tail = [r for r in rows if r[0] >= middle]
        _same_log(_read_confluent(b.bootstrap, topic_name, middle), tail)

        kp = KafkaConsumer(bootstrap_servers=b.bootstrap, enable_auto_commit=False, consumer_timeout_ms=5000)
        kp.assign([KPTopicPartition(topic_name, 0)])
        kp.seek_to_beginning()
        got = [(m.offset, m.key, m.value) for m in kp]
        kp.close()
        _same_log(got, rows)
        assert _latest(got) == latest

        import asyncio

        async def aio() -> list[tuple[int, bytes, bytes | None]]:
            c = AIOKafkaConsumer(bootstrap_servers=b.bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
            await c.start()
            try:
                tp = __import__("aiokafka").TopicPartition(topic_name, 0)
                c.assign([tp])
                c.seek(tp, middle)
                out = []
                while True:
                    batch = await c.getmany(tp, timeout_ms=3000)
                    if not batch:
                        return out
                    out += [(m.offset, m.key, m.value) for m in batch[tp]]
            finally:
                await c.stop()

        _same_log(asyncio.run(aio()), tail)

        kcat = shutil.which("kcat") or shutil.which("kafkacat")
        assert kcat is not None, "kcat is installed by the test command (see README)"
        out = subprocess.run(
            [
                kcat,
                "-C",
                "-b",
                b.bootstrap,
                "-t",
                topic_name,
                "-p",
                "0",
                "-o",
                "beginning",
                "-e",
                "-q",
                "-Z",
                "-f",
                "%o %k %s\\n",
            ],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        kcat_rows = [line.split(b" ", 2) for line in out.splitlines() if line]
        kcat_offsets = [int(r[0]) for r in kcat_rows]
        assert kcat_offsets == sorted(set(kcat_offsets)) and set(kcat_offsets) <= set(offsets)
        assert {r[1]: (None if r[2] == b"NULL" else r[2]) for r in kcat_rows} == latest
    finally:
        b.stop()


def test_keyless_records_and_bad_configs_are_refused(tmp_path: Path, topic_name: str) -> None:
    b = Broker(tmp_path / "data", CLEANER_ARGS)
    b.start()
    try:
        _create(b.bootstrap, topic_name, COMPACT)
        keyless = build_batch([Record(b"k", b"1", 0), Record(None, b"2", 0)])
        part = raw_produce(b.port, topic_name, keyless)
        assert part.error_code.value == int(ErrorCode.INVALID_RECORD)
        assert _read_confluent(b.bootstrap, topic_name) == []  # nothing appended
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        for bad in ({"cleanup.policy": "compactt"}, {"min.cleanable.dirty.ratio": "1.5"}, {"cleanup.policy": ""}):
            with pytest.raises(KafkaException) as e:
                admin.create_topics([NewTopic(topic_name + "-bad", 1, 1, config=bad)])[topic_name + "-bad"].result(30)
            assert e.value.args[0].name() == "INVALID_CONFIG", bad
        resource = ConfigResource("topic", topic_name)
        described = admin.describe_configs([resource])[resource].result(30)
        policy = described["cleanup.policy"]
        assert policy.value == "compact" and not policy.is_default
        assert described["delete.retention.ms"].value == "86400000" and described["delete.retention.ms"].is_default
        _create(b.bootstrap, topic_name + "-both", {"cleanup.policy": "compact,delete"})
    finally:
        b.stop()


def test_a_sigkill_while_cleaning_loses_no_keys_latest_value(tmp_path: Path, topic_name: str) -> None:
    """The broker is killed again and again while slow (throttled) cleaner passes run; after each restart every
    key's latest value is there, at the offset it was written."""
    throttled = [*CLEANER_ARGS, "--log-cleaner-io-max-bytes-per-second", "20000"]
    b = Broker(tmp_path / "data", throttled)
    b.start()
    try:
        _create(b.bootstrap, topic_name, COMPACT)
        latest = _produce(b.bootstrap, topic_name, rounds=30, codec="zstd")
        before = _read_confluent(b.bootstrap, topic_name)
        offsets_of = {}
        for o, k, _ in before:
            offsets_of[k] = o
        for kill in range(4):
            time.sleep(0.3 + 0.4 * kill)  # somewhere in a pass: reading, writing .cleaned, swapping
            b.kill()
            b.start()
            rows = _read_confluent(b.bootstrap, topic_name)
            assert _latest(rows) == latest, f"after kill {kill}"
            assert {k: o for o, k, _ in rows if o == offsets_of[k]} == offsets_of
        _wait_compacted(b.bootstrap, topic_name, COLD + 30 * KEYS)
        assert _latest(_read_confluent(b.bootstrap, topic_name)) == latest
        assert not list((b.data_dir / "kafka").rglob("*.swap"))
    finally:
        b.stop()


def test_describe_and_admin_api_show_the_cleaner(tmp_path: Path, topic_name: str) -> None:
    b = Broker(tmp_path / "data", CLEANER_ARGS)
    b.start()
    try:
        _create(b.bootstrap, topic_name, COMPACT)
        _produce(b.bootstrap, topic_name, rounds=20)
        _wait_compacted(b.bootstrap, topic_name, COLD + 20 * KEYS)
        view = b.admin_get(f"/v1/partitions/{topic_name}/0")
        assert isinstance(view, dict)
        cleaner = view["offsets"]["cleaner"]
        assert cleaner["first_dirty_offset"] > 0 and cleaner["last_cleaned_ms"] > 0
        assert 0.0 <= cleaner["dirty_ratio"] <= 1.0
        metrics = json.dumps(b.admin_get("/v1/shards"))
        assert "cleaner" in metrics
    finally:
        b.stop()


def test_a_replicated_compacted_topic_serves_the_latest_values_after_a_leader_change(
    tmp_path: Path, topic_name: str
) -> None:
    """Three nodes, replication factor 3. A follower is down while the leader takes keyed writes and compacts them;
    back, it copies the leader's compacted log, gaps and emptied producer batches included, and rejoins the ISR.
    Leadership then moves to it: it serves every key's latest value at the offset it was written."""
    from tests.integration.helpers import admin_call
    from tests.integration.test_cluster import Cluster
    from tests.integration.test_failover import _partitions, _wait

    cluster = Cluster(tmp_path)
    for b in cluster.nodes.values():
        b.extra_args += CLEANER_ARGS
    cluster.start()
    try:
        body = {"name": topic_name, "partitions": 1, "replication_factor": 3, "configs": COMPACT}
        status, answer = admin_call(cluster.nodes[cluster.leader()].admin, "POST", "/v1/topics", body)
        assert status == 201, answer
        _wait("every ISR full", lambda: len(_partitions(cluster, topic_name)[0]["isr"]) == 3)  # type: ignore[arg-type]
        p = _partitions(cluster, topic_name)[0]
        leader_node = int(str(p["leader"])) // 10 + 1
        victim_node = next(n for n in (1, 2, 3) if n not in (leader_node, cluster.leader()))
        victim, leader = cluster.nodes[victim_node], cluster.nodes[leader_node]
        assert victim.stop() == 0
        _wait("the stopped follower out of the ISR", lambda: len(_partitions(cluster, topic_name)[0]["isr"]) == 2)  # type: ignore[arg-type]
        latest = _produce(leader.bootstrap, topic_name, rounds=25)
        rows = _wait_compacted(leader.bootstrap, topic_name, COLD + 25 * KEYS)
        victim.start()
        _wait("the follower back in the ISR", lambda: len(_partitions(cluster, topic_name)[0]["isr"]) == 3)  # type: ignore[arg-type]
        victim_broker = (victim_node - 1) * 10
        status, moved = admin_call(
            victim.admin, "POST", f"/v1/partitions/{topic_name}/0/transfer_leadership", {"target": victim_broker}
        )
        assert status == 200, moved
        _wait("the follower to lead", lambda: _partitions(cluster, topic_name)[0]["leader"] == victim_broker)
        got = _read_confluent(victim.bootstrap, topic_name)
        assert _latest(got) == latest
        where = {k: o for o, k, _ in rows}
        assert {k: o for o, k, _ in got} == where  # each latest value at the offset it was written
        more = _produce(victim.bootstrap, topic_name, rounds=2)  # the new leader takes writes after the gaps
        assert _latest(_read_confluent(victim.bootstrap, topic_name)) == {**latest, **more}
    finally:
        for b in cluster.nodes.values():
            if b.alive():
                b.stop()


def test_a_corrupt_segment_is_skipped_by_the_cleaner_and_the_shard_stays_up(tmp_path: Path, topic_name: str) -> None:
    """A closed segment whose bytes rotted on disk: the cleaner's pass stops, nothing is swapped or deleted, the
    partition is marked (shown in /v1/partitions) and skipped, and the shard keeps serving."""
    b = Broker(tmp_path / "data", CLEANER_ARGS)
    b.start()
    try:
        _create(b.bootstrap, topic_name, {**COMPACT, "min.cleanable.dirty.ratio": "0.99"})  # no pass yet
        _produce(b.bootstrap, topic_name, rounds=25)
        segments = sorted((b.data_dir / "kafka" / f"{topic_name}-0").glob("*.log"))
        assert len(segments) > 3
        victim = segments[1]
        data = bytearray(victim.read_bytes())
        data[100] ^= 0xFF  # inside the first batch's records: its CRC no longer matches
        victim.write_bytes(bytes(data))
        status, answer = admin_call(
            b.admin, "PATCH", f"/v1/topics/{topic_name}", {"configs": {"min.cleanable.dirty.ratio": "0.01"}}
        )
        assert status == 200, answer
        deadline = time.monotonic() + 120
        cleaner: dict[str, object] | None = None
        while time.monotonic() < deadline:
            view = b.admin_get(f"/v1/partitions/{topic_name}/0")
            assert isinstance(view, dict)
            cleaner = view["offsets"]["cleaner"]
            if cleaner and cleaner["error"]:
                break
            time.sleep(0.3)
        assert cleaner and "corrupt" in str(cleaner["error"]), cleaner
        assert sorted((b.data_dir / "kafka" / f"{topic_name}-0").glob("*.log")) == segments  # nothing swapped
        more = _produce(b.bootstrap, topic_name, rounds=1)  # the shard still serves
        high = _read_confluent(b.bootstrap, topic_name, start=int(segments[-1].stem))  # past the rotten segment
        assert _latest(high).items() >= more.items()
        assert "skips this partition" in b.log(tail=10**8)
    finally:
        b.stop()
