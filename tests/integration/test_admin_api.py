"""The HTTP admin API against a real node, called the way the README's curl walk-through calls it, and checked
through real Kafka clients; every kind of bad input gets its 4xx and proposes nothing."""

from __future__ import annotations

import contextlib
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from tests.conftest import Broker, free_port_range
from tests.integration.helpers import admin_call

pytestmark = pytest.mark.integration


def _kafka_partitions(broker: Broker, name: str) -> int | None:
    md = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10)
    t = md.topics.get(name)
    return None if t is None or t.error is not None else len(t.partitions)


def test_the_readme_walkthrough(broker: Broker) -> None:
    # curl -s -X POST localhost:9644/v1/topics -d '{"name": "orders", "partitions": 6, ...}'
    status, topic = admin_call(
        broker.admin,
        "POST",
        "/v1/topics",
        '{"name": "orders", "partitions": 6, "replication_factor": 1, "configs": {"retention.ms": "86400000"}}',
    )
    assert status == 201, topic
    assert (topic["partitions"], topic["replication_factor"], topic["configs"]) == (6, 1, {"retention.ms": "86400000"})
    assert _kafka_partitions(broker, "orders") == 6  # visible to Kafka clients as soon as the API answered

    status, listed = admin_call(broker.admin, "GET", "/v1/topics")
    assert status == 200 and [t["name"] for t in listed] == ["orders"]

    patch = '{"partitions": 8, "configs": {"retention.ms": null, "segment.ms": 60000}}'
    status, patched = admin_call(broker.admin, "PATCH", "/v1/topics/orders", patch)
    assert status == 200, patched
    assert patched["partitions"] == 8 and patched["configs"] == {"segment.ms": "60000"}
    assert _kafka_partitions(broker, "orders") == 8

    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    for i in range(5):
        producer.produce("orders", value=b"v%d" % i, partition=7)
    assert producer.flush(30) == 0
    status, partition = admin_call(broker.admin, "GET", "/v1/partitions/orders/7")
    assert status == 200, partition
    assert partition["leader"] == partition["replicas"][0] and partition["isr"] == [partition["leader"]]
    assert partition["offsets"]["high_watermark"] == 5 and partition["offsets"]["log_start_offset"] == 0

    status, brokers = admin_call(broker.admin, "GET", "/v1/brokers")
    assert status == 200 and [b["status"] for b in brokers] == ["active"]
    broker_id = brokers[0]["broker_id"]
    status, one = admin_call(broker.admin, "GET", f"/v1/brokers/{broker_id}")
    assert status == 200 and one["metadata_lag"] == 0 and one["lease_remaining_ms"] > 0
    assert admin_call(broker.admin, "PUT", f"/v1/brokers/{broker_id}/maintenance")[1]["status"] == "maintenance"
    assert admin_call(broker.admin, "PUT", f"/v1/brokers/{broker_id}/maintenance")[0] == 200  # idempotent
    # A lone broker in maintenance still leads (nobody else has the data) but takes no new replicas.
    status, refused = admin_call(broker.admin, "POST", "/v1/topics", '{"name": "more"}')
    assert status == 400 and refused["field"] == "replication_factor"
    assert admin_call(broker.admin, "DELETE", f"/v1/brokers/{broker_id}/maintenance")[1]["status"] == "active"

    status, health = admin_call(broker.admin, "GET", "/v1/cluster/health_overview")
    assert status == 200 and health["is_healthy"] and health["controller_id"] == 1, health

    status, deleted = admin_call(broker.admin, "DELETE", "/v1/topics/orders")
    assert status == 200 and deleted == {"deleted": "orders"}
    assert _kafka_partitions(broker, "orders") is None
    assert admin_call(broker.admin, "GET", "/v1/topics/orders")[0] == 404


BAD_REQUESTS = [
    ("POST", "/v1/topics", "{not json", 400, None),
    ("POST", "/v1/topics", "[1, 2]", 400, None),
    ("POST", "/v1/topics", "", 400, None),
    ("POST", "/v1/topics", '{"name": "t", "partition": 3}', 400, "partition"),
    ("POST", "/v1/topics", '{"name": 7}', 400, "name"),
    ("POST", "/v1/topics", '{"name": "a/b"}', 400, "name"),
    ("POST", "/v1/topics", '{"name": ".."}', 400, "name"),
    ("POST", "/v1/topics", '{"name": "t", "partitions": 0}', 400, "partitions"),
    ("POST", "/v1/topics", '{"name": "t", "partitions": "6"}', 400, "partitions"),
    ("POST", "/v1/topics", '{"name": "t", "partitions": true}', 400, "partitions"),
    ("POST", "/v1/topics", '{"name": "t", "partitions": 100001}', 400, "partitions"),
    ("POST", "/v1/topics", '{"name": "t", "replication_factor": 2}', 400, "replication_factor"),
    ("POST", "/v1/topics", '{"name": "t", "configs": {"retention.ms": "soon"}}', 400, None),
    ("POST", "/v1/topics", '{"name": "t", "configs": {"no.such.config": "1"}}', 400, None),
    ("POST", "/v1/topics", '{"name": "t", "configs": {"retention.ms": [1]}}', 400, "configs.retention.ms"),
    ("POST", "/v1/topics", '{"name": "existing"}', 409, None),
    ("PATCH", "/v1/topics/existing", "{}", 400, None),
    ("PATCH", "/v1/topics/existing", '{"partitions": 1}', 400, "partitions"),
    ("PATCH", "/v1/topics/existing", '{"replication_factor": 5}', 400, "replication_factor"),
    ("PATCH", "/v1/topics/missing", '{"partitions": 5}', 404, None),
    ("DELETE", "/v1/topics/missing", None, 404, None),
    ("GET", "/v1/partitions/existing/99", None, 404, None),
    ("GET", "/v1/partitions/existing/-1", None, 400, "partition"),
    ("POST", "/v1/partitions/existing/0/transfer_leadership", '{"target": "x"}', 400, "target"),
    ("POST", "/v1/partitions/existing/0/transfer_leadership", '{"target": 99}', 400, "target"),
    ("POST", "/v1/partitions/existing/0/replicas", '{"replicas": []}', 400, "replicas"),
    ("POST", "/v1/partitions/existing/0/replicas", '{"replicas": [0, 0]}', 400, "replicas"),
    ("POST", "/v1/partitions/existing/0/replicas", '{"replicas": [99]}', 400, None),
    ("GET", "/v1/brokers/99", None, 404, None),
    ("GET", "/v1/brokers/abc", None, 400, "id"),
    ("PUT", "/v1/brokers/99/maintenance", None, 404, None),
    ("POST", "/v1/controller/voters/0", None, 400, "id"),
    ("PUT", "/v1/topics", "{}", 405, None),
    ("GET", "/v1/nothing/here", None, 404, None),
]


def test_bad_requests_get_a_precise_4xx_and_propose_nothing(broker: Broker) -> None:
    assert admin_call(broker.admin, "POST", "/v1/topics", '{"name": "existing", "partitions": 2}')[0] == 201
    before = admin_call(broker.admin, "GET", "/v1/controller")[1]["commit_index"]
    for method, path, body, status, field in BAD_REQUESTS:
        got, answer = admin_call(broker.admin, method, path, body)
        assert got == status, (method, path, body, answer)
        assert isinstance(answer["error"], str) and answer["message"], answer
        assert answer.get("field") == field, (method, path, body, answer)
    status, answer = admin_call(broker.admin, "POST", "/v1/topics", b" " * (1024 * 1024 + 1))
    assert status == 413 and answer["error"] == "too_large"
    after = admin_call(broker.admin, "GET", "/v1/controller")[1]["commit_index"]
    assert after == before  # nothing entered the metadata log
    assert admin_call(broker.admin, "GET", "/v1/status/ready")[0] == 200


def test_the_openapi_document_describes_every_route(broker: Broker) -> None:
    status, doc = admin_call(broker.admin, "GET", "/v1/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    paths = doc["paths"]
    for path, method in [
        ("/v1/topics", "post"),
        ("/v1/topics/{name}", "patch"),
        ("/v1/partitions/{topic}/{partition}/transfer_leadership", "post"),
        ("/v1/brokers/{id}/decommission", "put"),
        ("/v1/cluster/health_overview", "get"),
        ("/v1/cluster/balancer", "get"),
        ("/v1/controller/voters/{id}", "delete"),
    ]:
        assert method in paths[path], path
    for path, ops in paths.items():
        if "{" not in path and "get" in ops and path != "/metrics":
            assert admin_call(broker.admin, "GET", path)[0] == 200, path


def test_metrics_show_the_raft_controller(broker: Broker) -> None:
    deadline = time.monotonic() + 10
    with urllib.request.urlopen(f"{broker.admin}/metrics", timeout=10) as r:
        text = r.read().decode()
    assert time.monotonic() < deadline
    for name in (
        "rafka_raft_term 1.0",
        "rafka_raft_is_leader 1.0",
        "rafka_raft_apply_lag 0.0",
        "rafka_raft_leader_changes_total 1.0",
        "rafka_raft_fsync_seconds_count",
        'rafka_shard_metadata_lag{shard="0"} 0.0',
        "rafka_brokers_fenced 0.0",
    ):
        assert name in text, name
    commit = next(line for line in text.splitlines() if line.startswith("rafka_raft_commit_index "))
    assert float(commit.split()[1]) >= 2  # the first leader's no-op and this broker's registration


def test_a_topic_created_while_the_node_starts_gets_503_until_it_can_be_created(tmp_path: Path) -> None:
    """A new user's first command, sent as soon as the admin port answers: never a 400 (the request is right), a
    503 with retry_after_ms while the node's brokers register, then 201."""
    node = Broker(tmp_path / "data", shards=2)
    node.launch()
    answers: list[tuple[int, Any]] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not answers or answers[-1][0] == 503):
            with contextlib.suppress(OSError):  # the port is not bound or not served yet
                answers.append(admin_call(node.admin, "POST", "/v1/topics", {"name": "first", "partitions": 2}))
            time.sleep(0.02)
        assert answers and answers[-1][0] == 201, (answers[-3:], node.log())
        for status, body in answers[:-1]:
            assert status == 503 and body["retry_after_ms"] > 0, (status, body)
    finally:
        assert node.stop() == 0, node.log()


def test_a_node_waiting_for_its_quorum_is_live_and_answers_503_until_it_has_caught_up(tmp_path: Path) -> None:
    """One voter of three started alone: no leader, so it cannot catch up with the metadata. Its admin port still
    answers (a Kubernetes liveness probe must not kill a pod for waiting): live 200, everything else 503."""
    raft = free_port_range(3)
    voters = ",".join(f"{i}@127.0.0.1:{raft + i - 1}" for i in (1, 2, 3))
    node = Broker(tmp_path / "data", extra_args=["--node-id", "1", "--controller-voters", voters])
    node.launch()
    try:
        live: tuple[int, Any] | None = None
        deadline = time.monotonic() + 120
        while live is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError):  # the port is not served yet
                live = admin_call(node.admin, "GET", "/v1/status/live")
            time.sleep(0.05)
        assert live is not None and live[0] == 200 and live[1]["status"] == "live", (live, node.log())
        for method, path, body in (
            ("GET", "/v1/status/ready", None),
            ("GET", "/v1/topics", None),
            ("POST", "/v1/topics", {"name": "early"}),
        ):
            status, answer = admin_call(node.admin, method, path, body)
            assert status == 503 and answer["retry_after_ms"] > 0, (path, status, answer)
            assert "catching up with the metadata quorum" in answer["message"]
    finally:
        assert node.stop() == 0, node.log()
