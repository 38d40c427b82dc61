"""The verifier's consumer-group workload (issue 16): members of one group that read and commit while the faults
run, and are themselves SIGKILLed and restarted; then a finisher that drains the group to the end of the log.

Runs in processes spawned by the runner (one per member index; each spawns its incarnations, a child process each,
and SIGKILLs them at seeded random times), and the finisher and the loaders in the orchestrating process. A member
subscribes to the topic in group ``GROUP`` (classic protocol, range assignor), reads batches and commits its
positions synchronously after every batch. History (one file per incarnation, JSON lines):

- ``{"k": "gr", "p", "o", "m", "ta"}``: a record read by member incarnation ``m``;
- ``{"k": "gc", "p", "o", "m", "ts", "ta"}``: a commit of offset ``o`` acknowledged (sent at ``ts``, acknowledged
  at ``ta``, CLOCK_MONOTONIC seconds).

The history is flushed before every commit is sent, so a commit the broker may have taken never covers reads that a
SIGKILL then erased from the history. Every loop ends by itself (the job's end time, the finisher's bound).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.chaos.clients import History, history_lines
from bench.chaos.group_check import GroupCommit, GroupRead

GROUP = "chaos-group"
SESSION_TIMEOUT_MS = 6000
LIFETIME_S = (15.0, 45.0)  # a member incarnation lives this long (uniform, seeded) before its SIGKILL
CONSUME_BATCH = 200
CONSUME_WAIT_S = 0.2
COMMITTED_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class GroupMemberJob:
    index: int
    seed: int
    bootstrap: str
    topic: str
    end_s: float  # CLOCK_MONOTONIC: no incarnation is killed after this; the last one leaves the group then
    history_dir: str

    @property
    def history(self) -> str:
        """The member process's own history path (its log is next to it: the runner reads that on failure)."""
        return str(Path(self.history_dir) / f"group-member-{self.index}.jsonl")


def _consumer(bootstrap: str, client_id: str) -> Any:
    from confluent_kafka import Consumer

    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": GROUP,
            "client.id": client_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": 500,
            "fetch.wait.max.ms": 100,
            "log_level": 3,
        }
    )


def _read_and_commit(consumer: Any, history: History, member: str) -> None:
    """One batch: record what was read, then commit the positions and record what the broker acknowledged."""
    from confluent_kafka import KafkaException

    messages = consumer.consume(CONSUME_BATCH, CONSUME_WAIT_S)
    now = time.monotonic()
    read = False
    for m in messages:
        if m.error() is None:
            history.write(k="gr", p=m.partition(), o=m.offset(), m=member, ta=now)
            read = True
    if not read:
        return
    history.flush()
    sent = time.monotonic()
    try:
        committed = consumer.commit(asynchronous=False)
    except KafkaException:
        return  # a rebalance, a coordinator moving: not acknowledged, so not recorded
    acked = time.monotonic()
    for tp in committed or ():
        if tp.error is None and tp.offset >= 0:
            history.write(k="gc", p=tp.partition, o=tp.offset, m=member, ts=sent, ta=acked)


def _incarnation(job: GroupMemberJob, incarnation: int, stop_s: float) -> None:
    """One incarnation of a member, in its own process (``python -m bench.chaos.group_clients JOB_JSON N``)."""
    member = f"{job.index}.{incarnation}"
    fd = os.open(str(Path(job.history_dir) / f"group-{member}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    os.close(fd)
    history = History(str(Path(job.history_dir) / f"group-{member}.jsonl"))
    consumer = _consumer(job.bootstrap, f"chaos-group-{member}")
    consumer.subscribe([job.topic])
    try:
        while time.monotonic() < stop_s:
            _read_and_commit(consumer, history, member)
    finally:
        consumer.close()  # leaves the group (a SIGKILLed incarnation never gets here)
        history.close()


def member_main(job: GroupMemberJob) -> None:
    """Run incarnations of member ``index`` until ``end_s``: each lives a seeded random time and is SIGKILLed; the
    last one is stopped cleanly at ``end_s``."""
    rng = random.Random(job.seed * 1000 + job.index)
    incarnation = 0
    spec = json.dumps(asdict(job))
    while time.monotonic() < job.end_s and incarnation < 1000:
        dies_s = time.monotonic() + rng.uniform(*LIFETIME_S)
        last = dies_s >= job.end_s
        # A subprocess, not multiprocessing: the runner's client processes are daemons, which may not have children.
        proc = subprocess.Popen([sys.executable, "-m", "bench.chaos.group_clients", spec, str(incarnation)])
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(0.0, min(dies_s, job.end_s + 30) - time.monotonic()))
        if proc.poll() is None and not last:
            proc.send_signal(signal.SIGKILL)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        incarnation += 1


def finish(bootstrap: str, topic: str, ends: dict[int, int], history_dir: Path, timeout_s: float) -> str:
    """After the run: one more member reads until the group's positions reach ``ends`` (the final high watermarks)
    and commits them. Returns "" or why it stopped short."""
    from confluent_kafka import TopicPartition

    history = History(str(history_dir / "group-finisher.jsonl"))
    consumer = _consumer(bootstrap, "chaos-group-finisher")
    consumer.subscribe([topic])
    deadline = time.monotonic() + timeout_s
    note = ""
    try:
        while True:
            _read_and_commit(consumer, history, "finisher")
            committed = consumer.committed([TopicPartition(topic, p) for p in ends], timeout=10)
            if all(tp.offset >= ends[tp.partition] for tp in committed if tp.error is None):
                break
            if time.monotonic() > deadline:
                note = f"the group's finisher did not reach the end of every partition within {timeout_s:.0f} s"
                break
    finally:
        consumer.close()
        history.close()
    return note


def final_committed(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offsets as the coordinator has them now (retried while it moves or loads)."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": GROUP, "log_level": 3})
    deadline = time.monotonic() + COMMITTED_TIMEOUT_S
    try:
        while True:
            try:
                got = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
                if all(tp.error is None for tp in got):
                    return {tp.partition: tp.offset for tp in got}
            except KafkaException:
                pass
            if time.monotonic() > deadline:
                return {}
            time.sleep(0.5)
    finally:
        consumer.close()


def load(history_dir: Path) -> tuple[list[GroupRead], list[GroupCommit]]:
    reads: list[GroupRead] = []
    commits: list[GroupCommit] = []
    for path in sorted(history_dir.glob("group-*.jsonl")):
        for d in history_lines(path):
            if d["k"] == "gr":
                reads.append(GroupRead(d["p"], d["o"], d["m"], d["ta"]))
            elif d["k"] == "gc":
                commits.append(GroupCommit(d["p"], d["o"], d["m"], d["ts"], d["ta"]))
    return reads, commits


if __name__ == "__main__":
    _incarnation(GroupMemberJob(**json.loads(sys.argv[1])), int(sys.argv[2]), json.loads(sys.argv[1])["end_s"])
