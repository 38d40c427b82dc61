"""The monitoring against real processes: a local 3-node cluster scraped by a real ``prometheus`` with the alerts of
ops/prometheus/alerts.yml. Every metric the dashboard and the alerts name is served by a live ``/metrics``; when a node
is SIGKILLed, NodeDown and UnderReplicatedPartitions go to firing in Prometheus' HTTP API."""

from __future__ import annotations

import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer

from rafka_shards.records.builder import Record, build_batch
from tests.conftest import stop_all
from tests.integration.helpers import admin_call, raw_produce
from tests.integration.test_cluster import Cluster
from tests.ops.prometheus_server import Prometheus, require_prometheus, rules_with_for, running_prometheus, wait_for
from tests.ops.promql import PROMETHEUS_OWN, dashboard_expressions, exported_names, metric_names
from tests.ops.test_monitoring_files import REQUIRED_ALERTS

pytestmark = pytest.mark.integration

PARTITIONS = 3
MESSAGES = 60
WAIT_S = 120.0  # generous bounds: a busy 2-core machine runs three nodes and Prometheus here


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    require_prometheus()
    c = Cluster(tmp_path)
    for b in c.nodes.values():
        b.extra_args += ["--group-initial-rebalance-delay-ms", "300"]
    c.start()
    yield c
    stop_all(c.nodes.values())


def _create_replicated_topic(cluster: Cluster, name: str) -> None:
    """``name`` with a replica on every node (the admin API's POST /v1/topics), once each partition's ISR is full."""
    admin = cluster.nodes[1].admin
    status, body = admin_call(
        admin, "POST", "/v1/topics", {"name": name, "partitions": PARTITIONS, "replication_factor": 3}
    )
    assert status == 201, body

    def replicated() -> bool:
        status, topic = admin_call(admin, "GET", f"/v1/topics/{name}")
        return status == 200 and all(len(p["isr"]) == 3 and p["leader"] != -1 for p in topic["partitions"])

    wait_for(f"{name}: every ISR full", replicated, WAIT_S)


def _targets(cluster: Cluster) -> dict[int, str]:
    return {i: f"127.0.0.1:{b.admin_port}" for i, b in cluster.nodes.items()}


def _query(prometheus: Prometheus, expr: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = prometheus.api("query?query=" + urllib.parse.quote(expr))["result"]
    return result


def _all_up(prometheus: Prometheus, count: int) -> bool:
    result = _query(prometheus, 'sum(up{job="rafka"}) and count(up{job="rafka"})')
    return bool(result) and float(result[0]["value"][1]) == count


def test_every_metric_of_the_dashboard_and_the_alerts_is_served_by_a_live_node(
    cluster: Cluster, topic_name: str, tmp_path: Path
) -> None:
    _create_replicated_topic(cluster, topic_name)
    bootstrap = cluster.nodes[1].bootstrap
    # Traffic, so that the labelled counters have samples: produce (replicated three ways), a group's consume and
    # commit, and a produce to a partition that does not exist (a request error).
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for i in range(MESSAGES):
        producer.produce(topic_name, value=f"m{i}".encode(), partition=i % PARTITIONS)
    assert producer.flush(WAIT_S) == 0
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "monitoring", "auto.offset.reset": "earliest"}
        | {"enable.auto.commit": False}
    )
    try:
        consumer.subscribe([topic_name])
        consumed = 0
        deadline_polls = int(WAIT_S)
        for _ in range(deadline_polls):  # bounded: each poll waits at most a second
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                consumed += 1
                if consumed == MESSAGES // 2:
                    consumer.commit(asynchronous=False)
                    break
        assert consumed == MESSAGES // 2
    finally:
        consumer.close()
    answer = raw_produce(cluster.nodes[1].port, topic_name, build_batch([Record(b"k", b"v", 1)]), partition=99)
    assert answer.error_code != 0

    with running_prometheus(tmp_path / "prometheus", rules_with_for("1m"), list(_targets(cluster).values())) as prom:
        wait_for("every node scraped", lambda: _all_up(prom, 3), WAIT_S, prom.log)
        rules = [r for g in prom.api("rules")["groups"] for r in g["rules"]]
    named: dict[str, set[str]] = {}
    for where, expr in [*dashboard_expressions(), *((f"alert {r['name']}", r["query"]) for r in rules)]:
        for name in metric_names(expr):
            named.setdefault(name, set()).add(where)
    assert len(rules) == len(REQUIRED_ALERTS) and "rafka_partitions_under_replicated" in named

    exported: set[str] = set()

    def served() -> bool:
        exported.clear()
        for b in cluster.nodes.values():
            with urllib.request.urlopen(f"{b.admin}/metrics", timeout=10) as r:
                exported.update(exported_names(r.read().decode()))
        return set(named) - PROMETHEUS_OWN <= exported

    # The shards move their counts into the shared files every second: wait for them rather than assume.
    wait_for(
        "every metric named by the dashboard and the alerts served",
        served,
        WAIT_S,
        lambda: "\n".join(f"{n}: named by {sorted(named[n])}" for n in sorted(set(named) - PROMETHEUS_OWN - exported)),
    )


def test_prometheus_fires_node_down_and_under_replicated_partitions_when_a_node_is_killed(
    cluster: Cluster, topic_name: str, tmp_path: Path
) -> None:
    _create_replicated_topic(cluster, topic_name)
    targets = _targets(cluster)
    # The real rules with every for: at 2 s, evaluated every second.
    with running_prometheus(tmp_path / "prometheus", rules_with_for("2s"), list(targets.values())) as prom:
        wait_for("every node scraped", lambda: _all_up(prom, 3), WAIT_S, prom.log)

        def healthy() -> bool:
            result = _query(prom, 'sum(rafka_partitions_under_replicated{job="rafka"}) == 0')
            return bool(result) and not _active(prom, "NodeDown", "UnderReplicatedPartitions")

        wait_for("a healthy cluster, no alert", healthy, WAIT_S, lambda: str(prom.alerts()))
        shrinks_before = _sum(prom, 'sum(rafka_isr_shrinks_total{job="rafka"})')

        victim = 3
        cluster.nodes[victim].kill()  # SIGKILL to the supervisor, the controller and the shard at once

        def fired() -> bool:
            alerts = _active(prom, state="firing")
            firing = {(a["labels"]["alertname"], a["labels"].get("instance")) for a in alerts}
            return ("NodeDown", targets[victim]) in firing and ("UnderReplicatedPartitions", None) in firing

        wait_for("NodeDown and UnderReplicatedPartitions firing", fired, WAIT_S, lambda: str(prom.alerts()))
        # Only the victim is expected down, but a live node slow to answer a scrape on a loaded machine may be too.
        down = _active(prom, "NodeDown", state="firing")
        assert targets[victim] in {a["labels"]["instance"] for a in down}
        assert all(a["labels"]["severity"] == "critical" for a in down)
        under = _active(prom, "UnderReplicatedPartitions", state="firing")[0]
        assert under["labels"]["severity"] == "warning"
        assert under["annotations"]["runbook"] == "docs/operations.md#under-replicated-partitions"
        assert float(under["value"]) >= 1
        # The partitions' new ISRs were counted as shrinks by the leaders on the surviving nodes.
        wait_for(
            "ISR shrinks counted",
            lambda: _sum(prom, 'sum(rafka_isr_shrinks_total{job="rafka"})') > shrinks_before,
            WAIT_S,
        )


def _active(prometheus: Prometheus, *names: str, state: str | None = None) -> list[dict[str, Any]]:
    """The alerts Prometheus holds (pending or firing, or only ``state``), of ``names`` (every alert if empty)."""
    return [
        a
        for a in prometheus.alerts()
        if (not names or a["labels"]["alertname"] in names) and (state is None or a["state"] == state)
    ]


def _sum(prometheus: Prometheus, expr: str) -> float:
    result = _query(prometheus, expr)
    return float(result[0]["value"][1]) if result else 0.0
