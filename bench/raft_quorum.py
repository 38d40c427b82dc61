"""Benchmark of the Raft metadata path alone: committed metadata commands per second in a three-node quorum.

Three OS processes, each running one node's ``RaftController`` (the same code ``serve`` runs: WAL fsynced before
anything is sent or acknowledged, authenticated TCP transport on loopback, the metadata state machine applied on
every node), no shards and no Kafka in the way. Once a leader is elected, ``--clients`` concurrent proposers on the
leader commit ``--commands`` small metadata commands (``AllocateProducerIds``: validated against the speculative
image, replicated, fsynced on a majority, applied) and the bench reports commands per second, per-command commit
latency, and how many commands each fsynced Raft write carried (the batching that makes the rate).

Bounded: a fixed number of commands, a deadline on every wait; the processes stop by themselves. Appends one CSV row
(``--csv``).

    python bench/raft_quorum.py --commands 20000 --clients 64
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import multiprocessing
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from controller.commands import AllocateProducerIds, RegisterBroker
from controller.raft.node import Role
from controller.state_machine import CommandRejected
from rafka_shards.config import BrokerConfig
from rafka_shards.controller_node.raft_controller import RaftController

DEADLINE_S = 300


def _free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


async def _node_main(node_id: int, voters: str, root: str, args: dict[str, Any], results: Any, stop: Any) -> None:
    config = BrokerConfig(
        data_dir=Path(root) / f"node{node_id}",
        node_id=node_id,
        controller_voters=voters,
        controller_secret="bench",
        broker_session_timeout_ms=600_000,  # no shards heartbeat here: keep the registered broker unfenced
        controller_snapshot_entries=args["snapshot_entries"],
    )
    controller = await RaftController.open(config)
    await controller.start()
    try:
        await asyncio.wait_for(controller.wait_caught_up(), 60)
        if controller.node.role == Role.LEADER:
            results.put(await _load(controller, args))
        deadline = time.monotonic() + DEADLINE_S
        while not stop.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    finally:
        await controller.close()


async def _load(controller: RaftController, args: dict[str, Any]) -> dict[str, Any]:
    await controller.propose(RegisterBroker(0, "127.0.0.1", 9092, None, "bench"))
    total = args["commands"]
    issued = 0
    failed = 0
    latencies: list[float] = []
    syncs_before = controller.fsync_seconds.counts[:]

    async def client() -> None:
        nonlocal issued, failed
        while issued < total:
            issued += 1
            started = time.perf_counter()
            try:
                await controller.propose(AllocateProducerIds(0, 1))
            except CommandRejected:
                failed += 1
                continue
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(client() for _ in range(args["clients"]))), DEADLINE_S)
    elapsed = time.perf_counter() - started
    syncs = sum(controller.fsync_seconds.counts) - sum(syncs_before)
    latencies.sort()
    return {
        "commands": len(latencies),
        "failed": failed,
        "seconds": elapsed,
        "commands_per_s": len(latencies) / elapsed,
        "latency_p50_ms": 1000 * statistics.median(latencies),
        "latency_p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
        "leader_fsyncs": syncs,
        "commands_per_fsync": len(latencies) / max(1, syncs),
    }


def _run_node(node_id: int, voters: str, root: str, args: dict[str, Any], results: Any, stop: Any) -> None:
    asyncio.run(_node_main(node_id, voters, root, args, results, stop))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--snapshot-entries", type=int, default=10_000)
    parser.add_argument("--csv", type=Path, default=Path(__file__).parent / "results" / "raft_quorum.csv")
    ns = parser.parse_args()
    args = {"commands": ns.commands, "clients": ns.clients, "snapshot_entries": ns.snapshot_entries}
    ports = _free_ports(3)
    voters = ",".join(f"{i + 1}@127.0.0.1:{p}" for i, p in enumerate(ports))
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    stop = ctx.Event()
    with tempfile.TemporaryDirectory(prefix="rafka-raft-bench-") as root:
        procs = [
            ctx.Process(target=_run_node, args=(i + 1, voters, root, args, results, stop), daemon=True)
            for i in range(3)
        ]
        for p in procs:
            p.start()
        try:
            row = results.get(timeout=DEADLINE_S)
        finally:
            stop.set()
            for p in procs:
                p.join(30)
                if p.is_alive():
                    p.kill()
    row = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "cpus": os.cpu_count(),
        "clients": ns.clients,
        **{k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()},
    }
    print(", ".join(f"{k}={v}" for k, v in row.items()))
    ns.csv.parent.mkdir(parents=True, exist_ok=True)
    new = not ns.csv.exists()
    with ns.csv.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


if __name__ == "__main__":
    main()
