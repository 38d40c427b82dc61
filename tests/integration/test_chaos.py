"""``python -m bench chaos`` as CI runs it: a short fixed set of seeds with process faults, and one with a network
partition and a power loss, must pass; bad usage exits 2; SIGTERM stops every node and client it started."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from bench.chaos import lazyfs, netns
from tests.conftest import wait_gone

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# One seed of 48 s whose schedule SIGKILLs a shard, SIGSTOPs a node, SIGKILLs the Raft leader's node (the leader of
# partitions too), then a partition leader's node and a controller process when the machine lets recovery keep pace
# (``python -c "from bench.chaos.schedule import *; print(generate(4417, 48.0, PROCESS_FAULTS, 3, 4))"``); and one of
# 40 s that isolates a node in its network namespace, then pulls the plug on another. Each seed pays a cluster's
# start, the final read and the checks: one longer seed instead of two of 40 s (23: a partition leader's node, the
# Raft leader's node, a node; 18: a shard, a pause, a partition leader's node) kills a shard, a node and the Raft
# leader, and pauses a node, for about half the time.
PROCESS_SEEDS = "4417"
PROCESS_DURATION_S = 48
PROCESS_KINDS_MIN = {"kill-shard", "pause-node", "kill-raft-leader-node"}  # injected even with a load average of 11
SYSTEM_SEED = "6"
SYSTEM_KINDS_MIN = {"partition", "power-loss"}
DURATION_S = 40
RUN_TIMEOUT_S = 600  # a seed: start-up, load, recovery waits, healing, final read; bounded generously


def _chaos(args: list[str], **kw: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "bench", "chaos", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,  # type: ignore[call-overload]
    )


def _verdicts(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("chaos seed=")]


CHECKS = {"final_unread", "lost", "misplaced", "duplicated", "reordered", "hw_regressions", "replica_diffs"}


def _run_seeds(out: Path, seeds: str, duration_s: int, faults: str, kinds_min: set[str]) -> None:
    """Run the CLI; every seed must leave its history and node logs, inject faults, and pass; between them the seeds
    must have injected at least the fault kinds ``kinds_min``."""
    proc = _chaos(["--seeds", seeds, "--duration-s", str(duration_s), "--faults", faults, "--out", str(out)])
    output, _ = proc.communicate(timeout=RUN_TIMEOUT_S)
    verdicts = _verdicts(output)
    print("\n".join(verdicts))
    assert len(verdicts) == len(seeds.split(",")), output[-5000:]
    evidence: dict[str, object] = {}
    symptoms: set[str] = set()
    injected: set[str] = set()
    for seed in seeds.split(","):
        run = out / f"seed-{seed}"
        summary = json.loads((run / "summary.json").read_text())
        counts = summary["counts"]
        assert counts["acked"] > 0
        assert {"producer-0.jsonl", "consumer-0.jsonl", "faults.jsonl", "final.jsonl"} <= {
            p.name for p in (run / "history").iterdir()
        }
        assert (run / "nodes" / "node1.log").stat().st_size > 0
        assert summary["faults"], "no fault was injected"
        injected |= {f["kind"] for f in summary["faults"]}
        if not summary["passed"]:
            evidence[seed] = {"notes": summary["notes"], **summary["examples"]}
            symptoms |= {k for k in CHECKS | {"fatal_errors"} if counts[k]}
            symptoms |= {"notes"} if summary["notes"] else set()
    failed = [v for v in verdicts if not v.endswith("verdict=PASS")]
    assert not failed and proc.returncode == 0, f"{failed} {sorted(symptoms)}\n{json.dumps(evidence, indent=1)[:4000]}"
    assert kinds_min <= injected, f"fault kinds not injected: {sorted(kinds_min - injected)} (injected {injected})"


@pytest.mark.timeout(RUN_TIMEOUT_S + 60)
def test_a_short_fixed_set_of_seeds_with_process_faults_passes(tmp_path: Path) -> None:
    _run_seeds(tmp_path, PROCESS_SEEDS, PROCESS_DURATION_S, "process", PROCESS_KINDS_MIN)


@pytest.mark.timeout(RUN_TIMEOUT_S + 60)
@pytest.mark.skipif(bool(netns.available() or lazyfs.available()), reason=f"{netns.available() or lazyfs.available()}")
def test_a_seed_with_a_network_partition_and_a_power_loss_passes(tmp_path: Path) -> None:
    _run_seeds(tmp_path, SYSTEM_SEED, DURATION_S, "partition,power-loss", SYSTEM_KINDS_MIN)


def test_bad_usage_exits_2() -> None:
    for args in (["--faults", "kill-everything"], ["--seeds", "3-x"], ["--duration-s", "1"], ["--nodes", "0"]):
        proc = _chaos(args)
        output, _ = proc.communicate(timeout=60)
        assert proc.returncode == 2, (args, output)
        assert "bench chaos:" in output


@pytest.mark.timeout(180)
def test_sigterm_stops_every_node_and_client(tmp_path: Path) -> None:
    proc = _chaos(["--seed", "1", "--duration-s", "60", "--out", str(tmp_path)], start_new_session=True)
    me = psutil.Process(proc.pid)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "seed-1" / "history").glob("producer-*.jsonl")):  # the load has started
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0][-3000:]
        time.sleep(0.2)
    started = [me, *me.children(recursive=True)]
    nodes = [p for p in psutil.process_iter(["cmdline"]) if str(tmp_path) in " ".join(p.info["cmdline"] or [])]
    assert len(nodes) >= 3  # the three supervisors (and their children) run with a data dir under tmp_path
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output[-3000:]
    assert not wait_gone([*started, *nodes], timeout_s=30)
    # Nothing that works on the run's directory is left either: a group member's incarnations (subprocesses of the
    # member's process, started after the snapshot above) included.
    left = [p for p in psutil.process_iter(["cmdline"]) if str(tmp_path) in " ".join(p.info["cmdline"] or [])]
    assert not wait_gone(left, timeout_s=30), [" ".join(p.info["cmdline"])[:200] for p in left]
