"""One chaos run, from a fresh cluster to the verdict: start the nodes, create the topic, start the clients, inject
the seed's faults one at a time, heal, read everything back, compare the replicas on disk, check, report.

Runs in the bench's orchestrating process; the clients are processes it spawns (``spawn``: fresh interpreters) and
the nodes are process trees in their own sessions. Everything it started is stopped in ``finally``, whether the run
ends, fails or is interrupted (Ctrl-C, SIGTERM). Every wait has a bound, named below.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from bench import peers
from bench.chaos import checker, clients, faults, group_check, group_clients, lazyfs, netns, replicas, report
from bench.chaos.cluster import Cluster, ClusterError, ports_needed, specs, wait_for
from bench.chaos.schedule import TAIL_S, FaultKind, Plan, generate

TOPIC = "chaos"
CLIENT_LEAD_S = 3.0  # client processes are spawned this long before the load starts (interpreter start-up)
FLUSH_S = 30.0  # after the load, producers wait this long for outstanding acknowledgements
CONSUMER_TAIL_S = 5.0  # consumers read this long after the load ends
RECOVERY_TIMEOUT_S = 60.0  # after a fault: until every node is ready and every ISR full, or the next fault anyway
HEAL_TIMEOUT_S = 120.0  # after the run: the same, before the final read
FINAL_READ_TIMEOUT_S = 120.0
JOIN_GRACE_S = 20.0
MESSAGE_BYTES = 100


@dataclass(frozen=True, slots=True)
class Options:
    duration_s: float
    kinds: tuple[FaultKind, ...]
    nodes: int
    shards: int
    partitions: int
    replication_factor: int
    min_insync: int
    producers: int
    consumers: int
    rate: float
    keep_data: bool
    group_members: int = 0
    broker_args: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "kinds": ",".join(k.value for k in self.kinds)}


@dataclass(frozen=True, slots=True)
class Result:
    seed: int
    verdict: str
    passed: bool
    out: Path


class _Clients:
    def __init__(self) -> None:
        self.ctx = mp.get_context("spawn")
        self.procs: list[Any] = []
        self.logs: dict[str, Path] = {}

    def spawn(self, target: Any, job: Any, name: str) -> None:
        proc = self.ctx.Process(target=target, args=(job,), name=name, daemon=True)
        proc.start()
        self.procs.append(proc)
        self.logs[name] = Path(job.history.removesuffix(".jsonl") + ".log")

    def _tail(self, name: str) -> str:
        with contextlib.suppress(OSError):
            lines = [x for x in self.logs[name].read_text(errors="replace").splitlines() if not x.startswith("%")]
            return " | ".join(lines[-3:])
        return ""

    def join(self, deadline_s: float) -> list[str]:
        """Wait for every client until ``deadline_s`` (monotonic); kill the rest. Notes on those that failed."""
        notes = []
        for proc in self.procs:
            proc.join(max(0.0, deadline_s - time.monotonic()))
            if proc.is_alive():
                _kill_tree(proc.pid)
                proc.join(5)
                notes.append(f"{proc.name} did not finish in time and was killed (its history may be cut short)")
            elif proc.exitcode:
                notes.append(f"{proc.name} exited with {proc.exitcode}: {self._tail(proc.name)}")
        return notes

    def kill(self) -> None:
        for proc in self.procs:
            if proc.is_alive():
                _kill_tree(proc.pid)
            proc.join(5)


def _kill_tree(pid: int) -> None:
    """SIGKILL a client process and every process it started: a group member runs each incarnation as a subprocess
    (``group_clients.member_main``), which would outlive its killed parent, keep writing to a cluster that is being
    torn down and hold the run's stdout open. Stopped first, the parent cannot start another child meanwhile."""
    try:
        root = psutil.Process(pid)
        root.suspend()
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:
        return
    for p in tree:
        with contextlib.suppress(psutil.Error):
            p.kill()


def _log(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)


def run(seed: int, opts: Options, out: Path) -> Result:
    out.mkdir(parents=True, exist_ok=True)
    history = out / "history"
    history.mkdir(exist_ok=True)
    plan = generate(seed, opts.duration_s, opts.kinds, opts.nodes, opts.partitions, opts.shards)
    (out / "schedule.json").write_text(json.dumps(plan.to_json(), indent=2) + "\n")
    group = _Clients()
    cluster: Cluster | None = None
    passed = False
    try:
        cluster = _cluster(seed, opts, out / "nodes")
        result = _run(seed, opts, out, plan, cluster, group)
        passed = result.passed
        return result
    finally:
        group.kill()
        if cluster is not None:
            cluster.kill_all()
            cluster.close()
            if passed and not opts.keep_data:  # a failed seed keeps its data dirs as evidence
                for node in cluster.nodes.values():
                    shutil.rmtree(node.spec.data_dir.parent, ignore_errors=True)


def _cluster(seed: int, opts: Options, root: Path) -> Cluster:
    """The nodes' specs, in network namespaces when partitions are among the faults, with their data dirs on LazyFS
    mounts when power loss is. The caller closes it (which undoes both)."""
    base = peers.free_ports(ports_needed(opts.nodes, opts.shards))
    net: netns.Net | None = None
    if FaultKind.PARTITION in opts.kinds:
        net = netns.Net(opts.nodes, run_id=f"chaos-{os.getpid()}-{seed}")
    host_of = (lambda i: net.node_address(i - 1)) if net is not None else (lambda _i: "127.0.0.1")
    prefix_of = (lambda i: tuple(net.wrap(i - 1, []))) if net is not None else (lambda _i: ())
    cluster = Cluster(specs(root, opts.nodes, opts.shards, base, host_of, prefix_of, opts.broker_args), net)
    if FaultKind.POWER_LOSS in opts.kinds:
        try:
            for node in cluster.nodes.values():
                d = node.spec.data_dir
                fs = lazyfs.LazyFS(d.parent / "backing", d, log_path=root / f"{d.parent.name}-lazyfs.log")
                fs.start()
                cluster.lazyfs[node.spec.node_id] = fs
        except BaseException:
            cluster.close()
            raise
    return cluster


def _run(seed: int, opts: Options, out: Path, plan: Plan, cluster: Cluster, group: _Clients) -> Result:
    history = out / "history"
    notes: list[str] = []
    _log(f"seed {seed}: starting {opts.nodes} nodes in {out / 'nodes'}; {len(plan.faults)} faults planned")
    cluster.start()
    cluster.create_topic(TOPIC, opts.partitions, opts.replication_factor, opts.min_insync)
    wait_for(lambda: cluster.healthy(TOPIC), RECOVERY_TIMEOUT_S, f"topic {TOPIC} fully in sync")
    start_s = time.monotonic() + CLIENT_LEAD_S
    end_s = start_s + opts.duration_s
    _start_clients(group, cluster, opts, history, (start_s, end_s), seed)
    records, outcome_notes = _inject(cluster, plan, start_s, end_s, history, opts.producers)
    time.sleep(max(0.0, end_s - time.monotonic()))
    _log("load over: waiting for the clients, healing everything")
    notes += group.join(end_s + max(FLUSH_S, CONSUMER_TAIL_S) + JOIN_GRACE_S)
    notes += _heal(cluster)
    final = clients.final_read(cluster.bootstrap, TOPIC, opts.partitions, FINAL_READ_TIMEOUT_S)
    if final.note:
        notes.append(final.note)
    _write_final(history / "final.jsonl", final)
    committed: dict[int, int] = {}
    if opts.group_members:
        ends = {p: fp.high_watermark for p, fp in final.partitions.items()}
        note = group_clients.finish(cluster.bootstrap, TOPIC, ends, history, FINAL_READ_TIMEOUT_S)
        if note:
            notes.append(note)
        committed = group_clients.final_committed(cluster.bootstrap, TOPIC, opts.partitions)
        if not committed:
            notes.append("the group's committed offsets could not be read after the run")
    assignment = _assignment(cluster)
    if not assignment:
        notes.append("the replica assignment could not be read: replicas were not compared on disk")
    cluster.stop_all()
    on_disk = replicas.read_replicas(
        {_replica_name(n.spec.node_id): n.spec.data_dir for n in cluster.nodes.values()}, TOPIC, assignment
    )
    findings = _check(history, final, on_disk, records)
    group_findings = None
    if opts.group_members:
        reads, commits = group_clients.load(history)
        acks = [a for path in sorted(history.glob("producer-*.jsonl")) for a in clients.load_producer(path)[0]]
        group_findings = group_check.check_group(reads, commits, committed, final.partitions, acks)
    verdict = report.verdict_line(seed, opts.duration_s, len(records), findings, notes, group_findings)
    s = report.summary(
        seed, opts.to_json(), plan.to_json(), records, outcome_notes, findings, notes, verdict, group_findings
    )
    report.write(out, s)
    return Result(seed, verdict, bool(s["passed"]), out)


def _start_clients(
    group: _Clients, cluster: Cluster, opts: Options, history: Path, span: tuple[float, float], seed: int
) -> None:
    start_s, end_s = span
    for i in range(opts.group_members):
        gjob = group_clients.GroupMemberJob(i, seed, cluster.bootstrap, TOPIC, end_s, str(history))
        group.spawn(group_clients.member_main, gjob, f"chaos-group-member-{i}")
    for i in range(opts.consumers):
        job = clients.ConsumerJob(
            i, cluster.bootstrap, TOPIC, opts.partitions, end_s + CONSUMER_TAIL_S, str(history / f"consumer-{i}.jsonl")
        )
        group.spawn(clients.consumer_main, job, f"chaos-consumer-{i}")
    for i in range(opts.producers):
        pjob = clients.ProducerJob(
            index=i,
            bootstrap=cluster.bootstrap,
            topic=TOPIC,
            partitions=opts.partitions,
            rate=opts.rate,
            message_bytes=MESSAGE_BYTES,
            start_s=start_s,
            end_s=end_s,
            flush_s=FLUSH_S,
            history=str(history / f"producer-{i}.jsonl"),
        )
        group.spawn(clients.producer_main, pjob, f"chaos-producer-{i}")


def _inject(
    cluster: Cluster, plan: Plan, start_s: float, end_s: float, history: Path, producers: int
) -> tuple[list[checker.FaultRecord], list[str]]:
    """Run the plan's faults one at a time while there is time for them; each is followed by a bounded wait for
    the cluster to recover fully (every node ready, every ISR full, produce acknowledged again on every partition)
    and by its quiet gap."""
    acks = clients.AckWatch([history / f"producer-{i}.jsonl" for i in range(producers)])
    partitions = plan.partitions
    log_path = history / "faults.jsonl"
    outcomes: list[tuple[int, str, faults.Outcome]] = []
    next_at = start_s + plan.faults[0].planned_at_s if plan.faults else end_s
    with open(log_path, "a") as log:
        for fault in plan.faults:
            time.sleep(max(0.0, next_at - time.monotonic()))
            if time.monotonic() + fault.hold_s + TAIL_S > end_s:
                break
            try:
                outcome = faults.inject(cluster, fault, TOPIC)
            except (ClusterError, OSError, ValueError, KeyError, IndexError) as e:
                _log(f"fault {fault.index} {fault.kind.value}: could not be injected: {e}")
                log.write(json.dumps({"k": "skipped", "fault": fault.to_json(), "why": str(e)}) + "\n")
                next_at = time.monotonic() + fault.quiet_s
                continue
            try:
                recovered = wait_for(
                    _recovered(cluster, acks, outcome.injected_s, partitions), RECOVERY_TIMEOUT_S, "recovery"
                )
                note = outcome.note
                _log(f"fault {fault.index} {fault.kind.value} on {outcome.target}: recovered in {recovered:.1f} s")
            except ClusterError:
                note = f"{outcome.note}; not fully recovered after {RECOVERY_TIMEOUT_S:.0f} s".lstrip("; ")
                _log(f"fault {fault.index} {fault.kind.value} on {outcome.target}: {note}")
            log.write(json.dumps({"k": "fault", "fault": fault.to_json(), **asdict(outcome), "note": note}) + "\n")
            log.flush()
            outcomes.append(
                (
                    fault.index,
                    fault.kind.value,
                    faults.Outcome(outcome.target, outcome.injected_s, outcome.healed_s, note),
                )
            )
            next_at = time.monotonic() + fault.quiet_s
    records = [
        checker.FaultRecord(
            index,
            kind,
            o.target,
            o.injected_s,
            o.healed_s,
            outcomes[i + 1][2].injected_s if i + 1 < len(outcomes) else end_s,
        )
        for i, (index, kind, o) in enumerate(outcomes)
    ]
    return records, [o.note for _, _, o in outcomes]


def _recovered(cluster: Cluster, acks: clients.AckWatch, since_s: float, partitions: int) -> Callable[[], bool]:
    """Every node ready, every ISR full, and produce acknowledged on every partition since ``since_s``."""
    return lambda: cluster.healthy(TOPIC) and acks.available_since(since_s, partitions)


def _replica_name(node_id: int) -> str:
    return f"node{node_id}"


def _assignment(cluster: Cluster) -> dict[int, list[str]]:
    """partition -> the nodes holding a replica of it, from the metadata (every node if it cannot be read)."""
    everyone = [_replica_name(i) for i in sorted(cluster.nodes)]
    try:
        parts = cluster.partitions(TOPIC)
    except (ClusterError, OSError, ValueError, KeyError):
        return {}
    out: dict[int, list[str]] = {}
    for p in parts:
        nodes = {cluster.node_of_broker(int(b)) for b in p["replicas"]}
        out[int(p["partition"])] = sorted(_replica_name(n.spec.node_id) for n in nodes if n is not None) or everyone
    return out


def _heal(cluster: Cluster) -> list[str]:
    """Resume paused nodes, restart dead ones, heal the network; wait (bounded) until the cluster is whole."""
    if cluster.net is not None:
        cluster.net.heal_all()
    for node in cluster.nodes.values():
        if node.paused:
            node.resume()
        if not node.running():
            node.launch()
    try:
        took = wait_for(lambda: cluster.healthy(TOPIC), HEAL_TIMEOUT_S, "every node ready and every ISR full")
        _log(f"healed: every node ready and every ISR full after {took:.1f} s")
        return []
    except ClusterError as e:
        with contextlib.suppress(ClusterError):
            return [f"not healed: {e}; partitions: {cluster.partitions(TOPIC)}"]
        return [f"not healed: {e}"]


def _write_final(path: Path, final: clients.FinalRead) -> None:
    with open(path, "w") as f:
        for p, fp in sorted(final.partitions.items()):
            line = {"k": "partition", "p": p, "hw": fp.high_watermark, "lso": fp.log_start_offset}
            f.write(json.dumps(line, separators=(",", ":")) + "\n")
            for o, e in sorted(fp.entries.items()):
                f.write(json.dumps({"k": "r", "p": p, "o": o, "pr": e.producer, "s": e.seq}, separators=(",", ":")))
                f.write("\n")


def _check(
    history: Path,
    final: clients.FinalRead,
    on_disk: dict[int, dict[str, list[checker.BatchSummary]]],
    records: list[checker.FaultRecord],
) -> checker.Findings:
    acks: list[checker.Ack] = []
    errors: list[checker.ProduceError] = []
    for path in sorted(history.glob("producer-*.jsonl")):
        a, e = clients.load_producer(path)
        acks += a
        errors += e
    seen: list[checker.Seen] = []
    hws: list[checker.HwSeen] = []
    for path in sorted(history.glob("consumer-*.jsonl")):
        s, h = clients.load_consumer(path)
        seen += s
        hws += h
    return checker.check(acks, errors, seen, hws, final.partitions, on_disk, records)
