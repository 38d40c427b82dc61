"""The fault schedule of a chaos run, generated from a seed (sans-IO: no clock, no processes, no files).

Runs in the bench's orchestrating process. One fault at a time: inject, hold (a killed node stays down, a paused one
stays stopped, a link stays cut), heal, then a quiet gap before the next. ``generate`` draws everything random here,
from ``random.Random(seed)`` alone, so the same seed and parameters give the same list; what depends on the cluster
at run time (which node leads partition ``partition``, which node leads the Raft quorum) is resolved by ``faults``
when the fault is injected, from the choices written here. Like TigerBeetle's VOPR, a failing seed is printed and
reproduces the schedule.
"""

from __future__ import annotations

import enum
import random
from dataclasses import asdict, dataclass
from typing import Any


class FaultKind(enum.StrEnum):
    KILL_NODE = "kill-node"  # SIGKILL a node's whole process tree; restart it after hold_s
    KILL_SHARD = "kill-shard"  # SIGKILL one shard process; its supervisor restarts it
    KILL_LEADER_NODE = "kill-leader-node"  # kill-node on the node leading partition ``partition``
    KILL_RAFT_LEADER_NODE = "kill-raft-leader-node"  # kill-node on the Raft controller leader's node
    KILL_CONTROLLER = "kill-controller"  # SIGKILL a node's controller process; its supervisor restarts it
    PAUSE_NODE = "pause-node"  # SIGSTOP every process of a node for hold_s, then SIGCONT
    PARTITION = "partition"  # isolate a node's network namespace for hold_s (bench/chaos/netns.py)
    POWER_LOSS = "power-loss"  # SIGKILL a node, drop its unfsynced writes (bench/chaos/lazyfs.py), restart


PROCESS_FAULTS: tuple[FaultKind, ...] = (
    FaultKind.KILL_NODE,
    FaultKind.KILL_SHARD,
    FaultKind.KILL_LEADER_NODE,
    FaultKind.KILL_RAFT_LEADER_NODE,
    FaultKind.KILL_CONTROLLER,
    FaultKind.PAUSE_NODE,
)

# How long each kind is held before it is healed, seconds (low, high). Kinds healed by the node itself (a shard or
# controller restarted by its supervisor) hold 0.
HOLD_S: dict[FaultKind, tuple[float, float]] = {
    FaultKind.KILL_NODE: (1.0, 4.0),
    FaultKind.KILL_SHARD: (0.0, 0.0),
    FaultKind.KILL_LEADER_NODE: (1.0, 4.0),
    FaultKind.KILL_RAFT_LEADER_NODE: (1.0, 4.0),
    FaultKind.KILL_CONTROLLER: (0.0, 0.0),
    FaultKind.PAUSE_NODE: (3.0, 10.0),
    FaultKind.PARTITION: (3.0, 10.0),
    FaultKind.POWER_LOSS: (1.0, 4.0),
}
QUIET_S = (2.0, 5.0)  # the gap after a fault is healed (and the cluster has recovered) before the next one
WARMUP_S = 5.0  # load only, before the first fault
TAIL_S = 8.0  # no fault is planned to end later than this before the end of the run
# Time for the cluster to recover from a fault, counted when the schedule is sized: short, so that the plan holds at
# least as many faults as the run has time for (the runner stops at the end of the run, whatever is left).
RECOVERY_ALLOWANCE_S = 2.0
FAULTS_MAX = 10_000


@dataclass(frozen=True, slots=True)
class Fault:
    """One planned fault. ``node`` (1-based) is the target for kinds that pick a node; ``partition`` the one whose
    leader's node kill-leader-node hits; ``shard`` the shard index for kill-shard (modulo the node's shards)."""

    index: int
    kind: FaultKind
    node: int
    partition: int
    shard: int
    hold_s: float
    quiet_s: float
    planned_at_s: float  # from the start of the load, if every earlier fault took exactly its planned time

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "kind": self.kind.value}


@dataclass(frozen=True, slots=True)
class Plan:
    seed: int
    duration_s: float
    kinds: tuple[FaultKind, ...]
    nodes: int
    partitions: int
    faults: tuple[Fault, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "duration_s": self.duration_s,
            "kinds": [k.value for k in self.kinds],
            "nodes": self.nodes,
            "partitions": self.partitions,
            "faults": [f.to_json() for f in self.faults],
        }


def parse_kinds(text: str) -> tuple[FaultKind, ...]:
    """``"kill-node,pause-node"`` (or ``"all"``, ``"process"``) as fault kinds; ValueError naming an unknown one."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return tuple(FaultKind)
    if names == ["process"]:
        return PROCESS_FAULTS
    known = {k.value: k for k in FaultKind}
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(f"unknown fault kind(s) {', '.join(unknown) or '(none)'}; known: {', '.join(known)}")
    return tuple(dict.fromkeys(known[n] for n in names))


def generate(
    seed: int, duration_s: float, kinds: tuple[FaultKind, ...], nodes: int, partitions: int, shards: int = 1
) -> Plan:
    """The faults of a run of ``duration_s`` seconds of load: deterministic in all arguments."""
    assert kinds and nodes >= 1 and partitions >= 1 and shards >= 1
    rng = random.Random(seed)
    faults: list[Fault] = []
    t = WARMUP_S
    while len(faults) < FAULTS_MAX:
        kind = kinds[rng.randrange(len(kinds))]
        low, high = HOLD_S[kind]
        hold = round(rng.uniform(low, high), 2)
        quiet = round(rng.uniform(*QUIET_S), 2)
        fault = Fault(
            index=len(faults),
            kind=kind,
            node=rng.randrange(nodes) + 1,
            partition=rng.randrange(partitions),
            shard=rng.randrange(shards),
            hold_s=hold,
            quiet_s=quiet,
            planned_at_s=round(t, 2),
        )
        end = t + hold + RECOVERY_ALLOWANCE_S
        if end > duration_s - TAIL_S:
            break
        faults.append(fault)
        t = end + quiet
    return Plan(seed, duration_s, kinds, nodes, partitions, tuple(faults))
