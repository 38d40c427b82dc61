"""Benchmark of the Raft metadata quorum: committed metadata commands per second, and leader failover time.

Starts three real nodes (``python -m rafka_shards serve``, one shard each, fsync on) on loopback ports, then:

1. throughput: ``--clients`` threads, each with its own librdkafka AdminClient on one of the nodes, create
   ``--topics`` one-partition topics in total (one CreateTopic metadata command each, validated, committed by the
   quorum with fsync on a majority, applied on every node's shards) and report commands per second;
2. failover, ``--failovers`` times: SIGKILL the leader's node, time until a CreateTopics sent to a survivor is
   committed, restart the victim. Reports median and worst.

Bounded: a fixed number of topics and failovers, every wait has a deadline. Appends one CSV row (``--csv``).

    python bench/controller_cluster.py --topics 2000 --clients 8 --failovers 5
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

DEADLINE_S = 120


def _free_base(count: int) -> int:
    for base in range(20_000, 30_000, count + 3):
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no free ports")


class Node:
    def __init__(self, root: Path, node_id: int, kafka_port: int, admin_port: int, voters: str) -> None:
        self.node_id = node_id
        self.kafka_port = kafka_port
        self.admin_port = admin_port
        self.args = [
            sys.executable, "-m", "rafka_shards", "serve", "--data-dir", str(root / f"node{node_id}"),
            "--shards", "1", "--listen", f"127.0.0.1:{kafka_port}", "--admin-listen", f"127.0.0.1:{admin_port}",
            "--node-id", str(node_id), "--controller-voters", voters, "--broker-id", str(node_id * 10),
        ]  # fmt: skip
        self.log = root / f"node{node_id}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def admin(self, path: str) -> dict[str, object]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=5) as r:
            out = json.loads(r.read())
            assert isinstance(out, dict)
            return out

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/v1/status/ready", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def kill(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)


def _wait(cond: object, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _leader(nodes: list[Node]) -> int:
    result: list[int] = []

    def agreed() -> bool:
        seen = set()
        for n in nodes:
            if n.proc is not None and n.proc.poll() is None:
                try:
                    seen.add(n.admin("/v1/controller")["leader"])
                except OSError:
                    return False
        if len(seen) == 1 and None not in seen:
            result.append(int(str(seen.pop())))
            return True
        return False

    _wait(agreed, "an agreed leader")
    return result[-1]


def _create(admin: AdminClient, name: str) -> None:
    admin.create_topics([NewTopic(name, 1, 1)], request_timeout=30)[name].result(timeout=60)


def throughput(nodes: list[Node], topics: int, clients: int) -> float:
    per_client = topics // clients
    errors: list[BaseException] = []

    def work(c: int) -> None:
        admin = AdminClient({"bootstrap.servers": nodes[c % len(nodes)].bootstrap})
        try:
            for i in range(per_client):
                _create(admin, f"bench-{c}-{i}")
        except Exception as e:  # noqa: BLE001 - reported after the run
            errors.append(e)

    threads = [threading.Thread(target=work, args=(c,)) for c in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE_S)
    elapsed = time.monotonic() - started
    if errors:
        raise RuntimeError(f"{len(errors)} clients failed: {errors[0]!r}")
    return per_client * clients / elapsed


def failover(nodes: list[Node], rounds: int) -> list[float]:
    times = []
    for r in range(rounds):
        leader = _leader(nodes)
        victim = next(n for n in nodes if n.node_id == leader)
        survivor = next(n for n in nodes if n.node_id != leader)
        admin = AdminClient({"bootstrap.servers": survivor.bootstrap})
        _create(admin, f"warm-{r}")  # a connection to the survivor is open before the kill
        victim.kill()
        killed = time.monotonic()
        _create(admin, f"failover-{r}")
        times.append(time.monotonic() - killed)
        victim.start()
        _wait(victim.ready, f"node {victim.node_id} back")
    return times


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--topics", type=int, default=2000)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--failovers", type=int, default=5)
    p.add_argument("--csv", default="bench/results/controller.csv")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="rafka-bench-controller-") as tmp:
        root = Path(tmp)
        base = _free_base(9)
        voters = ",".join(f"{i}@127.0.0.1:{base + 6 + i - 1}" for i in (1, 2, 3))
        nodes = [Node(root, i, base + 2 * (i - 1), base + 2 * (i - 1) + 1, voters) for i in (1, 2, 3)]
        try:
            for n in nodes:
                n.start()
            for n in nodes:
                _wait(n.ready, f"node {n.node_id} ready")
            rate = throughput(nodes, args.topics, args.clients)
            print(f"committed metadata commands: {rate:.0f}/s ({args.topics} CreateTopic, {args.clients} clients)")
            times = failover(nodes, args.failovers)
            print(
                f"SIGKILL of the leader to the first committed write: median {statistics.median(times):.2f} s, "
                f"worst {max(times):.2f} s over {len(times)}"
            )
        finally:
            for n in nodes:
                n.stop()
    out = Path(args.csv)
    out.parent.mkdir(parents=True, exist_ok=True)
    new = not out.exists()
    with out.open("a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(["time", "topics", "clients", "commands_per_s", "failover_median_s", "failover_worst_s"])
        w.writerow(
            [int(time.time()), args.topics, args.clients, f"{rate:.0f}", f"{statistics.median(times):.3f}",
             f"{max(times):.3f}"]
        )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
