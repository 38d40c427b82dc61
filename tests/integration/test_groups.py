"""Consumer groups with librdkafka (confluent-kafka 2.16) against real broker processes: subscribe in several
consumer processes, commits that survive consumer and broker restarts, a SIGKILLed consumer's partitions moving to
the others, and the AdminClient's group operations."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.conftest import Broker, running

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
WAIT_S = 90  # generous: the machine may be busy; every wait ends as soon as its condition holds
GROUP_ARGS = ["--group-initial-rebalance-delay-ms", "300"]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Broker]:
    yield from running(Broker(tmp_path / "data", GROUP_ARGS, shards=2))


class ConsumerProcess:
    def __init__(self, bootstrap: str, group: str, topic: str, out: Path, *extra: str) -> None:
        self.out = out
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.group_consumer", bootstrap, group, topic, str(out), *extra],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def events(self) -> list[dict[str, Any]]:
        if not self.out.exists():
            return []
        lines = self.out.read_text().splitlines()
        return [json.loads(line) for line in lines if line.endswith("}")]

    def consumed(self) -> list[tuple[int, int, str]]:
        return [(e["p"], e["o"], e["v"]) for e in self.events() if "v" in e]

    def assignment(self) -> set[int]:
        """The partitions held now: assignments add, revocations take away (eager protocols revoke everything
        before each assignment; KIP-848 and cooperative ones move only what changes)."""
        current: set[int] = set()
        for e in self.events():
            if "assigned" in e:
                current |= set(e["assigned"])
            elif "revoked" in e:
                current -= set(e["revoked"])
        return current

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(WAIT_S) == 0


def wait_for(what: str, condition: Any, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout_s}s: {what}")


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        f.result(timeout=30)


def produce(bootstrap: str, topic: str, partitions: int, per_partition: int, tag: str) -> set[str]:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"})
    values = set()
    for p in range(partitions):
        for i in range(per_partition):
            value = f"{tag}-{p}-{i}"
            producer.produce(topic, value=value, partition=p)
            values.add(value)
    assert producer.flush(30) == 0
    return values


def balanced(consumers: list[ConsumerProcess], partitions: int) -> bool:
    sets = [c.assignment() for c in consumers]
    return all(sets) and sum(len(s) for s in sets) == partitions and set().union(*sets) == set(range(partitions))


def consume_round(bootstrap: str, tmp: Path, group: str, topic: str, values: set[str], tag: str) -> None:
    """Three consumer processes share the topic's six partitions; ``values`` are then produced and must each be
    consumed (and committed) by exactly one of them, nothing else consumed."""
    consumers = [ConsumerProcess(bootstrap, group, topic, tmp / f"{tag}-{i}.jsonl") for i in range(3)]
    try:
        wait_for("three consumers share six partitions", lambda: balanced(consumers, 6))
        produced = produce(bootstrap, topic, 6, 50, tag)
        values |= produced
        wait_for("every message consumed", lambda: {v for c in consumers for _, _, v in c.consumed()} >= produced)
    finally:
        for c in consumers:
            c.stop()
    consumed = [v for c in consumers for _, _, v in c.consumed()]
    assert sorted(consumed) == sorted(produced), "each message is consumed once, by one consumer, and only new ones"
    owners: dict[int, set[int]] = {}
    for n, c in enumerate(consumers):
        for p, _, _ in c.consumed():
            owners.setdefault(p, set()).add(n)
    assert all(len(o) == 1 for o in owners.values()), owners


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(partitions)])
    result = admin.list_consumer_group_offsets([request])[group].result(timeout=30)
    return {tp.partition: tp.offset for tp in result.topic_partitions}


def test_three_consumer_processes_share_partitions_and_commits_survive_restarts(
    node: Broker, tmp_path: Path, topic_name: str
) -> None:
    create_topic(node.bootstrap, topic_name, 6)
    values: set[str] = set()
    consume_round(node.bootstrap, tmp_path, "g-share", topic_name, values, "first")
    assert committed(node.bootstrap, "g-share", topic_name, 6) == dict.fromkeys(range(6), 50)
    # New consumer processes start from the committed offsets: only the new messages.
    consume_round(node.bootstrap, tmp_path, "g-share", topic_name, values, "second")
    node.restart()
    assert committed(node.bootstrap, "g-share", topic_name, 6) == dict.fromkeys(range(6), 100)
    consume_round(node.bootstrap, tmp_path, "g-share", topic_name, values, "third")
    assert committed(node.bootstrap, "g-share", topic_name, 6) == dict.fromkeys(range(6), 150)


def test_a_sigkilled_consumers_partitions_move_to_the_survivor(node: Broker, tmp_path: Path, topic_name: str) -> None:
    create_topic(node.bootstrap, topic_name, 4)
    args = ("--session-timeout-ms", "6000")
    consumers = [ConsumerProcess(node.bootstrap, "g-kill", topic_name, tmp_path / f"c{i}.jsonl", *args) for i in (0, 1)]
    try:
        wait_for("two consumers share four partitions", lambda: balanced(consumers, 4))
        victim, survivor = consumers
        lost = victim.assignment()
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        produced = produce(node.bootstrap, topic_name, 4, 20, "after-kill")
        wait_for("the survivor took every partition", lambda: survivor.assignment() == set(range(4)))
        wait_for("the survivor consumed everything", lambda: {v for _, _, v in survivor.consumed()} >= produced)
        assert lost <= {p for p, _, _ in survivor.consumed()}
    finally:
        consumers[1].stop()


def test_admin_client_lists_describes_alters_and_deletes_groups(node: Broker, tmp_path: Path, topic_name: str) -> None:
    create_topic(node.bootstrap, topic_name, 2)
    produce(node.bootstrap, topic_name, 2, 10, "x")
    admin = AdminClient({"bootstrap.servers": node.bootstrap})
    consumer = ConsumerProcess(node.bootstrap, "g-admin", topic_name, tmp_path / "c.jsonl")
    try:
        wait_for("consumed", lambda: len(consumer.consumed()) == 20)
        listed = admin.list_consumer_groups().result(timeout=30)
        assert "g-admin" in {g.group_id for g in listed.valid} and not listed.errors
        described = admin.describe_consumer_groups(["g-admin"])["g-admin"].result(timeout=30)
        assert described.state.name == "STABLE" and described.partition_assignor == "range"
        (member,) = described.members
        assert {tp.partition for tp in member.assignment.topic_partitions} == {0, 1}
        assert member.host.endswith("127.0.0.1")
        with pytest.raises(KafkaException, match="NON_EMPTY_GROUP"):
            admin.delete_consumer_groups(["g-admin"])["g-admin"].result(timeout=30)
    finally:
        consumer.stop()
    assert committed(node.bootstrap, "g-admin", topic_name, 2) == {0: 10, 1: 10}
    request = ConsumerGroupTopicPartitions(
        "g-admin", [TopicPartition(topic_name, 0, 3), TopicPartition(topic_name, 1, 4)]
    )
    admin.alter_consumer_group_offsets([request])["g-admin"].result(timeout=30)
    assert committed(node.bootstrap, "g-admin", topic_name, 2) == {0: 3, 1: 4}
    described = admin.describe_consumer_groups(["g-admin"])["g-admin"].result(timeout=30)
    assert described.state.name == "EMPTY" and not described.members
    admin.delete_consumer_groups(["g-admin"])["g-admin"].result(timeout=30)
    assert "g-admin" not in {g.group_id for g in admin.list_consumer_groups().result(timeout=30).valid}
    assert committed(node.bootstrap, "g-admin", topic_name, 2) == {0: -1001, 1: -1001}
    with pytest.raises(KafkaException, match="GROUP_ID_NOT_FOUND"):
        admin.delete_consumer_groups(["g-admin"])["g-admin"].result(timeout=30)


def test_admin_api_and_metrics_show_groups_and_lag(node: Broker, tmp_path: Path, topic_name: str) -> None:
    from tests.integration.helpers import admin_call

    create_topic(node.bootstrap, topic_name, 2)
    produce(node.bootstrap, topic_name, 2, 10, "before")
    consumer = ConsumerProcess(node.bootstrap, "g-http", topic_name, tmp_path / "c.jsonl")
    try:
        wait_for("consumed", lambda: len(consumer.consumed()) == 20)
        status, listed = admin_call(node.admin, "GET", "/v1/groups")
        assert status == 200 and not listed["errors"]
        assert {"group_id": "g-http", "protocol_type": "consumer", "state": "Stable"} in [
            {k: g[k] for k in ("group_id", "protocol_type", "state")} for g in listed["groups"]
        ]
        status, described = admin_call(node.admin, "GET", "/v1/groups/g-http")
        assert status == 200 and described["state"] == "Stable" and described["protocol"] == "range"
        (member,) = described["members"]
        assert member["client_host"].endswith("127.0.0.1") and member["assignment"] == {topic_name: [0, 1]}
        status, refused = admin_call(node.admin, "DELETE", "/v1/groups/g-http")
        assert status == 409, refused
    finally:
        consumer.stop()
    produce(node.bootstrap, topic_name, 2, 5, "after")
    status, described = admin_call(node.admin, "GET", "/v1/groups/g-http")
    assert status == 200 and described["state"] == "Empty" and described["members"] == []
    assert [(o["partition"], o["committed_offset"], o["log_end_offset"], o["lag"]) for o in described["offsets"]] == [
        (0, 10, 15, 5),
        (1, 10, 15, 5),
    ]
    with urllib.request.urlopen(f"{node.admin}/metrics", timeout=30) as r:
        metrics = r.read().decode()
    assert f'rafka_group_lag{{group="g-http",partition="0",topic="{topic_name}"}} 5.0' in metrics
    assert 'rafka_group_members{group="g-http"} 0.0' in metrics
    assert 'rafka_group_state{group="g-http",state="Empty"} 1.0' in metrics
    assert 'rafka_group_offset_commits_total{group="g-http"} 20.0' in metrics
    assert 'rafka_group_rebalances_total{group="g-http"}' in metrics
    assert admin_call(node.admin, "GET", "/v1/groups/no-such-group")[0] == 404
    assert admin_call(node.admin, "DELETE", "/v1/groups/g-http") == (200, {"deleted": "g-http"})
    assert admin_call(node.admin, "DELETE", "/v1/groups/g-http")[0] == 404


@pytest.fixture
def kip848_node(tmp_path: Path) -> Iterator[Broker]:
    """Short KIP-848 session and heartbeat interval, so a killed member is noticed in seconds."""
    args = [*GROUP_ARGS, "--group-consumer-session-timeout-ms", "6000", "--group-consumer-heartbeat-interval-ms", "500"]
    yield from running(Broker(tmp_path / "data", args, shards=2))


def test_the_consumer_group_protocol_kip_848_shares_moves_and_commits(
    kip848_node: Broker, tmp_path: Path, topic_name: str
) -> None:
    """librdkafka's group.protocol=consumer (ConsumerGroupHeartbeat): three members share six partitions with the
    coordinator's uniform assignor, each message is consumed once; a SIGKILLed member's partitions move to the
    others once its session times out; commits are kept; ConsumerGroupDescribe shows the group; after a restart of
    the coordinator the group is loaded from its records and the members carry on."""
    node = kip848_node
    create_topic(node.bootstrap, topic_name, 6)
    kip848 = ("--protocol", "consumer")
    consumers = [
        ConsumerProcess(node.bootstrap, "g-848", topic_name, tmp_path / f"c{i}.jsonl", *kip848) for i in range(3)
    ]
    try:
        # Reconciliation is incremental (revoke first), so [1, 2, 3] is a state on the way to the target [2, 2, 2].
        wait_for(
            "three members share six partitions, two each",
            lambda: balanced(consumers, 6) and sorted(len(c.assignment()) for c in consumers) == [2, 2, 2],
        )
        first = produce(node.bootstrap, topic_name, 6, 20, "first")
        wait_for("consumed", lambda: {v for c in consumers for _, _, v in c.consumed()} >= first)
        assert sorted(v for c in consumers for _, _, v in c.consumed()) == sorted(first)
        admin = AdminClient({"bootstrap.servers": node.bootstrap})
        described = admin.describe_consumer_groups(["g-848"])["g-848"].result(timeout=30)
        assert described.type.name == "CONSUMER" and described.state.name == "STABLE"
        assert sorted(len(m.assignment.topic_partitions) for m in described.members) == [2, 2, 2]
        victim, survivors = consumers[0], consumers[1:]
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        wait_for("the survivors hold every partition", lambda: balanced(survivors, 6))
        second = produce(node.bootstrap, topic_name, 6, 20, "second")
        wait_for("consumed after the kill", lambda: {v for c in survivors for _, _, v in c.consumed()} >= second)
        # The coordinator restarts: it loads the group from __consumer_offsets and the members carry on.
        moves = [[e for e in c.events() if "assigned" in e or "revoked" in e] for c in survivors]
        node.restart()
        third = produce(node.bootstrap, topic_name, 6, 20, "third")
        wait_for("consumed after a restart", lambda: {v for c in survivors for _, _, v in c.consumed()} >= third)
        assert [[e for e in c.events() if "assigned" in e or "revoked" in e] for c in survivors] == moves
    finally:
        for c in consumers[1:]:
            c.stop()
    assert committed(node.bootstrap, "g-848", topic_name, 6) == dict.fromkeys(range(6), 60)
    assert "loaded 1 group(s)" in node.log(tail=10**8)


def test_cooperative_sticky_consumers_rebalance_incrementally(node: Broker, tmp_path: Path, topic_name: str) -> None:
    """librdkafka's cooperative-sticky assignor over the classic protocol: a joining member takes partitions without
    the others giving up the rest (incremental revocations), and every message is still consumed once."""
    create_topic(node.bootstrap, topic_name, 6)
    args = ("--assignor", "cooperative-sticky")
    first = ConsumerProcess(node.bootstrap, "g-coop", topic_name, tmp_path / "c0.jsonl", *args)
    consumers = [first]
    try:
        wait_for("one member holds every partition", lambda: balanced(consumers, 6))
        consumers.append(ConsumerProcess(node.bootstrap, "g-coop", topic_name, tmp_path / "c1.jsonl", *args))
        wait_for("two members share six partitions", lambda: balanced(consumers, 6))
        revoked = [set(e["revoked"]) for e in first.events() if "revoked" in e]
        assert revoked and all(len(r) < 6 for r in revoked), "only what moved was revoked"
        assert sorted(len(c.assignment()) for c in consumers) == [3, 3]
        produced = produce(node.bootstrap, topic_name, 6, 20, "coop")
        wait_for("consumed", lambda: {v for c in consumers for _, _, v in c.consumed()} >= produced)
        assert sorted(v for c in consumers for _, _, v in c.consumed()) == sorted(produced)
    finally:
        for c in consumers:
            c.stop()


def test_a_kip_848_regex_subscription_includes_topics_created_later(kip848_node: Broker, topic_name: str) -> None:
    """librdkafka subscribes to ``^<prefix>-.*`` over the consumer protocol (v1: the coordinator matches the
    expression): it reads the matching topics, not the others, and a matching topic created later too."""
    from confluent_kafka import Consumer

    node = kip848_node
    prefix = topic_name[:40]
    for name in (f"{prefix}-a", f"{prefix}-b", f"other-{prefix}"):
        create_topic(node.bootstrap, name, 2)
        produce(node.bootstrap, name, 2, 5, name)
    consumer = Consumer(
        {
            "bootstrap.servers": node.bootstrap,
            "group.id": "g-regex",
            "group.protocol": "consumer",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([f"^{prefix}-.*"])
    seen: set[str] = set()

    def read() -> set[str]:
        m = consumer.poll(0.2)
        if m is not None and m.error() is None and m.topic() is not None:
            seen.add(m.topic() or "")
        return seen

    try:
        wait_for("both matching topics read", lambda: read() >= {f"{prefix}-a", f"{prefix}-b"})
        create_topic(node.bootstrap, f"{prefix}-c", 1)
        produce(node.bootstrap, f"{prefix}-c", 1, 3, "late")
        wait_for("the topic created later read", lambda: f"{prefix}-c" in read())
        assert f"other-{prefix}" not in seen
    finally:
        consumer.close()
