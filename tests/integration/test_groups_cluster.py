"""Consumer groups on three real nodes: ``__consumer_offsets`` is replicated three ways, and when the group
coordinator's node is SIGKILLed the group carries on with a new coordinator (the new leader of the group's offsets
partition loads it from its log): every message is consumed, and no acknowledged commit is lost."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from kio.schema.find_coordinator.v2.request import FindCoordinatorRequest

from tests.conftest import stop_all
from tests.integration.helpers import admin_call
from tests.integration.test_cluster import Cluster
from tests.integration.test_groups import ConsumerProcess, committed, wait_for
from tests.integration.test_groups_bad_input import call

pytestmark = pytest.mark.integration
PARTITIONS = 4
OFFSETS_PARTITIONS = 8


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    for b in c.nodes.values():
        b.extra_args += ["--group-initial-rebalance-delay-ms", "300"]
        b.extra_args += ["--offsets-topic-partitions", str(OFFSETS_PARTITIONS)]
    c.start()
    yield c
    stop_all(c.nodes.values())


def _replicated(cluster: Cluster, topic: str, partitions: int) -> bool:
    status, t = admin_call(next(iter(cluster.live())).admin, "GET", f"/v1/topics/{topic}")
    if status != 200 or len(t["partitions"]) != partitions:
        return False
    return all(len(p["isr"]) == 3 and p["leader"] != -1 for p in t["partitions"])


def _produce(bootstrap: str, topic: str, tag: str, per_partition: int) -> set[str]:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5})
    values = set()
    for p in range(PARTITIONS):
        for i in range(per_partition):
            values.add(f"{tag}-{p}-{i}")
            producer.produce(topic, value=f"{tag}-{p}-{i}", partition=p)
    assert producer.flush(120) == 0
    return values


def _end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe"})
    ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in range(PARTITIONS)}
    c.close()
    return ends


def test_the_group_survives_its_coordinators_node_being_killed(cluster: Cluster, tmp_path: Path) -> None:
    bootstrap = ",".join(b.bootstrap for b in cluster.nodes.values())
    leader_admin = cluster.nodes[cluster.leader()].admin
    body = {"name": "events", "partitions": PARTITIONS, "replication_factor": 3, "configs": {}}
    assert admin_call(leader_admin, "POST", "/v1/topics", body)[0] == 201
    wait_for("events replicated", lambda: _replicated(cluster, "events", PARTITIONS))
    first = _produce(bootstrap, "events", "before", 25)
    args = ("--session-timeout-ms", "6000")
    consumers = [ConsumerProcess(bootstrap, "g-ha", "events", tmp_path / f"c{i}.jsonl", *args) for i in (0, 1)]
    try:
        wait_for("first batch consumed", lambda: {v for c in consumers for _, _, v in c.consumed()} >= first)
        wait_for(
            "__consumer_offsets replicated", lambda: _replicated(cluster, "__consumer_offsets", OFFSETS_PARTITIONS)
        )
        before = committed(bootstrap, "g-ha", "events", PARTITIONS)
        assert before == dict.fromkeys(range(PARTITIONS), 25)
        found = call(cluster.nodes[1].port, 10, 2, FindCoordinatorRequest(key="g-ha"))
        assert found.error_code == 0
        victim = cluster.nodes[int(found.node_id) // 10 + 1]
        victim.kill()  # SIGKILL to the whole node: supervisor, controller and shards
        second = _produce(bootstrap, "events", "after", 25)
        wait_for(
            "every message consumed after the coordinator's node died",
            lambda: {v for c in consumers for _, _, v in c.consumed()} >= first | second,
            timeout_s=180,
        )
    finally:
        for c in consumers:
            c.stop()
    after = committed(bootstrap, "g-ha", "events", PARTITIONS)
    assert all(after[p] >= before[p] for p in range(PARTITIONS)), "a commit went backwards"
    assert after == _end_offsets(bootstrap, "events") == dict.fromkeys(range(PARTITIONS), 50)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    described = admin.describe_consumer_groups(["g-ha"])["g-ha"].result(timeout=30)
    assert described.state.name == "EMPTY"
    assert int(found.node_id) != described.coordinator.id, "a new coordinator serves the group"
