"""The partition balancer on a real cluster (issue 17, dynamic scalability): a fourth node that joins gets its share
of replicas and leaders while an idempotent acks=all producer keeps writing, and when a node has been gone longer
than --node-unavailable-timeout-ms its replicas are re-created on the others; every acknowledged record is read
back at the end, and /v1/cluster/balancer shows what happened. When the gone node comes back, the copies it holds of
partitions that moved away are deleted and it gets its share again."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, Message, Producer

from tests.conftest import stop_all
from tests.integration.helpers import admin_call
from tests.integration.test_cluster import Cluster, _read_all, _wait

pytestmark = pytest.mark.integration

PARTITIONS = 8
REPLICATION = 3
NODE_UNAVAILABLE_TIMEOUT_MS = 5000
MESSAGES_MAX = 30_000  # the producer's bound, whatever happens (300 s at the rate)
RATE_PER_S = 100


@pytest.fixture
def cluster4(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, spare=1)
    for b in [*c.nodes.values(), *c.spares.values()]:
        b.extra_args += ["--node-unavailable-timeout-ms", str(NODE_UNAVAILABLE_TIMEOUT_MS)]
        b.extra_args += ["--partition-balancer-tick-ms", "300", "--partition-balancer-moves-max", "4"]
        b.extra_args += ["--reassignment-max-bytes-per-second", str(256 * 1024)]  # the throttled path, for real
        # The teardown stops the four voters one after another: once two are down the other two have no quorum, and
        # each would spend the whole controlled-shutdown bound (10 s by default) failing to propose its maintenance.
        # This test SIGKILLs its victim and never drains a node (test_rolling_restart does): a short bound suffices.
        b.extra_args += ["--controlled-shutdown-timeout-ms", "2000"]
    try:
        c.start()
        yield c
    finally:
        stop_all([*c.nodes.values(), *c.spares.values()])


class BackgroundProducer:
    """An idempotent acks=all producer writing keyed records round-robin over the partitions at a steady rate, in
    a thread, until stopped or MESSAGES_MAX; it keeps every acknowledged value and every delivery error."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.producer = Producer(
            {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5}
        )
        self.acked: list[bytes] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.errors.append(str(err))
        else:
            value = msg.value()
            assert value is not None
            self.acked.append(value)

    def _run(self) -> None:
        for n in range(MESSAGES_MAX):
            if self._stop.is_set():
                break
            self.producer.produce(self.topic, value=b"v-%d" % n, partition=n % PARTITIONS, on_delivery=self._delivered)
            self.producer.poll(1.0 / RATE_PER_S)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        assert self.producer.flush(60) == 0, "records still unacknowledged"


def _balancer(admin: str) -> dict[str, Any]:
    status, body = admin_call(admin, "GET", "/v1/cluster/balancer")
    assert status == 200, body
    assert isinstance(body, dict)
    return body


def _brokers(status: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {int(b["broker_id"]): b for b in status["brokers"]}


def test_a_joining_node_gets_its_share_and_a_gone_nodes_replicas_are_recreated(
    cluster4: Cluster, topic_name: str
) -> None:
    first = cluster4.nodes[1]
    body = {"name": topic_name, "partitions": PARTITIONS, "replication_factor": REPLICATION}
    status, created = admin_call(first.admin, "POST", "/v1/topics", body)
    assert status == 201, created
    ready = _balancer(first.admin)
    assert ready["state"] == "ready" and ready["replica_spread"] == 0, ready

    producer = BackgroundProducer(first.bootstrap, topic_name)
    producer.start()
    try:
        # A fourth node joins: it is added to the quorum, registers its broker, and the balancer moves replicas
        # and then leadership to it, a few partitions at a time.
        spare = cluster4.spares[4]
        spare.launch()
        leader = cluster4.nodes[cluster4.leader()]
        status, voters = admin_call(leader.admin, "POST", "/v1/controller/voters/4")
        assert status == 200, voters
        spare.wait_ready()
        new_broker = 30
        seen_moving: list[int] = []

        def balanced() -> bool:
            st = _balancer(spare.admin)
            seen_moving.append(len(st["reassignments"]))
            b = _brokers(st).get(new_broker)
            return (
                b is not None
                and st["state"] == "ready"
                and st["replica_spread"] <= 1
                and st["leader_spread"] <= 1
                and b["replicas"] == PARTITIONS * REPLICATION // 4
                and b["leaders"] >= 1
            )

        took = _wait("the new node to get its share of replicas and leaders", balanced, timeout_s=180)
        print(f"balanced {took:.1f} s after the fourth node was ready")
        assert max(seen_moving) <= 4  # --partition-balancer-moves-max
        active = cluster4.nodes[cluster4.leader()]
        counters = _balancer(active.admin)
        assert counters["active"] is True and counters["replica_moves_total"] >= PARTITIONS * REPLICATION // 4
        parts = active.admin_get(f"/v1/topics/{topic_name}")
        assert isinstance(parts, dict)
        for p in parts["partitions"]:
            assert sorted(p["isr"]) == sorted(p["replicas"]) and len(p["replicas"]) == REPLICATION, p

        # A node that is gone for longer than the timeout: its replicas are re-created on the other three.
        victim_node = next(n for n in (1, 2, 3) if n != cluster4.leader())
        victim_broker = (victim_node - 1) * 10
        cluster4.nodes[victim_node].kill()
        watcher = cluster4.nodes[cluster4.leader()]

        def gone_is_reported() -> bool:
            st = _balancer(watcher.admin)
            return any(u["node_id"] == victim_node for u in st["unavailable_nodes"])

        _wait("the node to be reported unavailable", gone_is_reported, timeout_s=60)

        def recreated() -> bool:
            t = watcher.admin_get(f"/v1/topics/{topic_name}")
            assert isinstance(t, dict)
            return all(
                victim_broker not in p["replicas"]
                and len(p["replicas"]) == REPLICATION
                and sorted(p["isr"]) == sorted(p["replicas"])
                for p in t["partitions"]
            )

        took = _wait("the gone node's replicas to be re-created on the others", recreated, timeout_s=180)
        print(f"replicas re-created {took:.1f} s after the node was reported gone")
        st = _balancer(cluster4.nodes[cluster4.leader()].admin)
        assert st["recreate_moves_total"] >= 1 and st["state"] == "ready", st
        (gone,) = st["unavailable_nodes"]
        assert gone["node_id"] == victim_node and gone["recreate_in_ms"] == 0

        # It comes back: its copies of partitions that moved away are deleted, and it gets its share again.
        victim = cluster4.nodes[victim_node]
        victim.start()
        active = cluster4.nodes[cluster4.leader()]

        def rebalanced() -> bool:
            st = _balancer(active.admin)
            b = _brokers(st)[victim_broker]
            return st["state"] == "ready" and st["replica_spread"] <= 1 and b["replicas"] > 0

        _wait("the node that came back to get replicas again", rebalanced, timeout_s=180)
        t = active.admin_get(f"/v1/topics/{topic_name}")
        assert isinstance(t, dict)
        here = {int(p["partition"]) for p in t["partitions"] if victim_broker in p["replicas"]}
        on_disk = {int(d.name.rsplit("-", 1)[1]) for d in (victim.data_dir / "kafka").glob(f"{topic_name}-*")}
        assert on_disk == here, (on_disk, here)
    finally:
        producer.stop()

    assert producer.errors == [], producer.errors[:5]
    assert len(producer.acked) >= 100
    reader = cluster4.nodes[cluster4.leader()]
    got = _read_all(reader.bootstrap, topic_name, PARTITIONS, len(producer.acked))
    assert sorted(got) == sorted(producer.acked)  # everything acknowledged, each once
    print(f"{len(producer.acked)} records acknowledged through both, all read back")
