"""Measure fail-over: seconds from a SIGKILL until an acks=all, idempotent produce succeeds on every partition.

Not a test (it asserts no speed): a script that starts three nodes on loopback with the default session timeout,
a topic of 4 partitions, replication factor 3, min.insync.replicas=2, and one confluent-kafka producer sending to
every partition every 10 ms. For each fault it SIGKILLs the victim, records, per partition, when the first record
*sent after the kill* was acknowledged, restarts the victim and waits until every ISR is full again.

    PYTHONPATH=$PWD python -m tests.integration.failover_times --runs 3 [--faults shard,node,leader-node,raft-leader]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from tests.conftest import Broker, free_port_range
from tests.integration.helpers import admin_call
from tests.integration.test_failover import PARTITIONS, Load, kill_when_steady

FAULTS = ("shard", "node", "leader-node", "raft-leader")


class Cluster:
    def __init__(self, root: Path) -> None:
        base = free_port_range(3)
        voters = ",".join(f"{i}@127.0.0.1:{base + i - 1}" for i in (1, 2, 3))
        self.nodes = {
            i: Broker(
                root / f"node{i}",
                [
                    "--node-id",
                    str(i),
                    "--controller-voters",
                    voters,
                    "--broker-id",
                    str((i - 1) * 10),
                    "--controller-secret",
                    "s",
                ],
            )
            for i in (1, 2, 3)
        }

    def start(self) -> None:
        for b in self.nodes.values():
            b.launch()
        for b in self.nodes.values():
            b.wait_ready()

    def any_live(self) -> Broker:
        return next(b for b in self.nodes.values() if b.alive())

    def raft_leader(self) -> int:
        status = self.any_live().admin_get("/v1/controller")
        assert isinstance(status, dict)
        return int(status["leader"])

    def partitions(self, topic: str) -> list[dict[str, object]]:
        t = self.any_live().admin_get(f"/v1/topics/{topic}")
        assert isinstance(t, dict)
        return list(t["partitions"])

    def wait_isr_full(self, topic: str, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if all(len(p["isr"]) == 3 and p["leader"] != -1 for p in self.partitions(topic)):  # type: ignore[arg-type]
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError("ISRs not full again")


def _victim(cluster: Cluster, topic: str, fault: str) -> tuple[int, Broker]:
    raft = cluster.raft_leader()
    if fault == "raft-leader":
        return raft, cluster.nodes[raft]
    if fault == "leader-node":  # a node leading partition 0 (not the Raft leader, that is the next fault)
        led = int(str(cluster.partitions(topic)[0]["leader"])) // 10 + 1
        node = led if led != raft else next(n for n in (1, 2, 3) if n != raft)
        return node, cluster.nodes[node]
    node = next(n for n in (1, 2, 3) if n != raft)
    return node, cluster.nodes[node]


def measure(fault: str, cluster: Cluster, topic: str, load: Load) -> float:
    node, victim = _victim(cluster, topic, fault)
    killed_at = kill_when_steady(victim, load, shard_only=fault == "shard")
    deadline = killed_at + 60
    while (took := load.resumed_after(killed_at)) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{fault}: produce did not resume on every partition within 60 s")
        time.sleep(0.02)
    if fault != "shard":
        victim.launch()
        victim.wait_ready()
    cluster.wait_isr_full(topic)
    print(f"{fault:12s} node {node}: {took:.2f} s", flush=True)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--faults", default=",".join(FAULTS))
    parser.add_argument("--keep", help="data directories and node logs go here (kept) instead of a temporary one")
    args = parser.parse_args()
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or tmp
        cluster = Cluster(Path(root))
        cluster.start()
        topic = "failover"
        status, body = admin_call(
            cluster.nodes[1].admin,
            "POST",
            "/v1/topics",
            {"name": topic, "partitions": PARTITIONS, "replication_factor": 3, "configs": {"min.insync.replicas": "2"}},
        )
        assert status == 201, body
        cluster.wait_isr_full(topic)
        load = Load(",".join(b.bootstrap for b in cluster.nodes.values()), topic)
        try:
            for fault in args.faults.split(","):
                for _ in range(args.runs):
                    results.setdefault(fault, []).append(measure(fault, cluster, topic, load))
        finally:
            load.close()
            for b in cluster.nodes.values():
                if b.alive():
                    b.stop()
    for fault, times in results.items():
        print(f"{fault:12s} median {statistics.median(times):.2f} s, max {max(times):.2f} s over {len(times)} runs")


if __name__ == "__main__":
    main()
