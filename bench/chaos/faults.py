"""What each fault kind does to the cluster and how it is healed: one function per kind, in ``INJECTORS``.

Runs in the bench's orchestrating process. An injector injects its fault, holds it ``fault.hold_s`` seconds, heals
it and says what it hit and when. Targets that depend on the cluster's state (a partition's leader, the Raft leader)
are resolved at injection, from the admin API; when that cannot be answered (no quorum) the schedule's node is hit
and the outcome says so. The set is pluggable: a kind whose library is missing (``partition`` needs
``bench/chaos/netns.py``, ``power-loss`` needs ``bench/chaos/lazyfs.py``) is refused by ``unavailable`` before the run.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import signal
import time
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass

from bench.chaos.cluster import Cluster, ClusterError, Node
from bench.chaos.schedule import Fault, FaultKind

ADMIN_ERRORS = (ClusterError, OSError, ValueError, KeyError, IndexError, urllib.error.URLError)


@dataclass(frozen=True, slots=True)
class Outcome:
    target: str
    injected_s: float  # CLOCK_MONOTONIC
    healed_s: float
    note: str = ""


Injector = Callable[[Cluster, Fault, str], Outcome]


def _now() -> float:
    return time.monotonic()


def _hold(fault: Fault) -> None:
    time.sleep(fault.hold_s)


def _restart(node: Node) -> float:
    node.launch()
    return _now()


def kill_node(cluster: Cluster, fault: Fault, topic: str, node: Node | None = None, note: str = "") -> Outcome:
    node = node or cluster.nodes[fault.node]
    node.kill()
    injected = _now()
    _hold(fault)
    return Outcome(node.name, injected, _restart(node), note)


def kill_leader_node(cluster: Cluster, fault: Fault, topic: str) -> Outcome:
    node: Node | None = None
    note = ""
    with contextlib.suppress(*ADMIN_ERRORS):
        parts = cluster.partitions(topic)
        leader = int(parts[fault.partition % len(parts)]["leader"])
        node = cluster.node_of_broker(leader)
        note = f"leader of p{fault.partition % len(parts)}: broker {leader}"
    if node is None:
        note = f"leader of p{fault.partition} unknown; hit the scheduled node"
    return kill_node(cluster, fault, topic, node, note)


def kill_raft_leader_node(cluster: Cluster, fault: Fault, topic: str) -> Outcome:
    leader = cluster.raft_leader()
    if leader is None or leader not in cluster.nodes:
        return kill_node(cluster, fault, topic, None, "no Raft leader known; hit the scheduled node")
    return kill_node(cluster, fault, topic, cluster.nodes[leader], "Raft leader")


def _kill_pid(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def kill_shard(cluster: Cluster, fault: Fault, topic: str) -> Outcome:
    node = cluster.nodes[fault.node]
    pids = node.shard_pids()
    index = fault.shard % len(pids)
    _kill_pid(pids[index])
    injected = _now()
    return Outcome(f"{node.name} shard {index} (broker {node.spec.broker_id + index})", injected, injected)


def kill_controller(cluster: Cluster, fault: Fault, topic: str) -> Outcome:
    node = cluster.nodes[fault.node]
    _kill_pid(node.controller_pid())
    injected = _now()
    return Outcome(f"{node.name} controller process", injected, injected)


def pause_node(cluster: Cluster, fault: Fault, topic: str) -> Outcome:
    node = cluster.nodes[fault.node]
    node.pause()
    injected = _now()
    try:
        _hold(fault)
    finally:
        node.resume()
    return Outcome(node.name, injected, _now(), f"paused {fault.hold_s:.1f} s")


def partition(cluster: Cluster, fault: Fault, topic: str) -> Outcome:
    """Cut every link of one node's network namespace, then heal them all (``bench/chaos/netns.py``)."""
    net = cluster.net
    assert net is not None, "the partition fault needs the cluster started in network namespaces"
    node = cluster.nodes[fault.node]
    net.isolate(cluster.net_index(fault.node))
    node.cut_off = True
    injected = _now()
    try:
        _hold(fault)
    finally:
        net.heal_all()
        node.cut_off = False
    return Outcome(f"{node.name} isolated", injected, _now(), f"isolated {fault.hold_s:.1f} s")


def power_loss(cluster: Cluster, fault: Fault, topic: str) -> Outcome:
    """SIGKILL a node, drop the writes it had not fsynced (``bench/chaos/lazyfs.py``), restart it after the hold."""
    fs = cluster.lazyfs.get(fault.node)
    assert fs is not None, "the power-loss fault needs the node's data dir on a LazyFS mount"
    node = cluster.nodes[fault.node]
    node.kill()
    injected = _now()
    dropped, files = fs.pull_plug()
    _hold(fault)
    return Outcome(
        f"{node.name} power loss", injected, _restart(node), f"{dropped} unsynced bytes of {files} files dropped"
    )


INJECTORS: dict[FaultKind, Injector] = {
    FaultKind.KILL_NODE: kill_node,
    FaultKind.KILL_SHARD: kill_shard,
    FaultKind.KILL_LEADER_NODE: kill_leader_node,
    FaultKind.KILL_RAFT_LEADER_NODE: kill_raft_leader_node,
    FaultKind.KILL_CONTROLLER: kill_controller,
    FaultKind.PAUSE_NODE: pause_node,
    FaultKind.PARTITION: partition,
    FaultKind.POWER_LOSS: power_loss,
}

# The library module each kind needs beyond the broker; each has ``available() -> str | None`` (why it cannot run).
LIBRARIES: dict[FaultKind, str] = {
    FaultKind.PARTITION: "bench.chaos.netns",
    FaultKind.POWER_LOSS: "bench.chaos.lazyfs",
}


def unavailable(kinds: tuple[FaultKind, ...]) -> list[str]:
    """Why some of ``kinds`` cannot run here (empty: all can)."""
    out = []
    for kind in kinds:
        name = LIBRARIES.get(kind)
        if name is None:
            continue
        if importlib.util.find_spec(name) is None:
            out.append(f"{kind.value} needs {name.replace('.', '/')}.py, not present here")
            continue
        why = importlib.import_module(name).available()
        if why:
            out.append(f"{kind.value}: {why}")
    return out


def inject(cluster: Cluster, fault: Fault, topic: str) -> Outcome:
    return INJECTORS[fault.kind](cluster, fault, topic)
