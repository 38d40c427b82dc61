"""``python -m bench chaos``: its flags, their bounds, and running one or more seeds in a row.

Runs in the bench's orchestrating process. Exit codes: 0 when every seed passed, 1 when one failed (or could not
run), 2 for bad usage, 130 when interrupted (everything started is stopped first).
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

from bench.chaos import faults, runner
from bench.chaos.cluster import ClusterError
from bench.chaos.schedule import parse_kinds

SEEDS_MAX = 10_000
DURATION_MAX_S = 24 * 3600
RATE_MAX = 100_000.0


class UsageError(Exception):
    pass


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "chaos",
        help="Jepsen-style verifier: a local 3-node cluster, idempotent acks=all producers, seeded faults, checks",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Start a local cluster, run idempotent acks=all producers and reading consumers, inject the "
        "seed's faults one at a time, heal, read every partition back and check the history: lost, misplaced, "
        "duplicated, reordered, high watermark going backwards, replicas differing on disk, unavailability per "
        "fault. Prints one verdict line per seed; exit 0 when all pass.",
    )
    p.add_argument("--seed", type=int, default=1, help="the fault schedule's seed")
    p.add_argument("--seeds", default="", help="several seeds in a row: a list (1,2,5) or a range (1-20)")
    p.add_argument("--duration-s", type=float, default=120.0, help="seconds of load and faults per seed")
    p.add_argument(
        "--faults",
        default="process",
        help="comma-separated fault kinds, 'process' (every SIGKILL/SIGSTOP kind) or 'all': "
        + ", ".join(k for k in faults.INJECTORS),
    )
    p.add_argument("--nodes", type=int, default=3, help="nodes in the cluster (each a Raft voter)")
    p.add_argument("--shards", type=int, default=1, help="shard processes per node")
    p.add_argument("--partitions", type=int, default=4, help="partitions of the topic")
    p.add_argument("--replication-factor", type=int, default=3, help="replicas per partition (<= nodes)")
    p.add_argument("--min-insync", type=int, default=2, help="min.insync.replicas of the topic")
    p.add_argument("--producers", type=int, default=3, help="idempotent acks=all producer processes")
    p.add_argument("--consumers", type=int, default=1, help="reading consumer processes (each reads everything)")
    p.add_argument("--rate", type=float, default=250.0, help="messages per second per producer")
    p.add_argument(
        "--group-members",
        type=int,
        default=3,
        help="members of the consumer group that read and commit, SIGKILLed and restarted as they go (0: none)",
    )
    p.add_argument("--out", type=Path, default=None, help="run directory (default bench/results/chaos-<UTC time>)")
    p.add_argument("--keep-data", action="store_true", help="keep the nodes' data dirs of passing seeds too")
    p.add_argument(
        "--broker-arg",
        action="append",
        default=[],
        help="extra flag for every node, e.g. --broker-arg=--broker-session-timeout-ms=2000 (repeatable)",
    )


def parse_seeds(seed: int, seeds: str) -> list[int]:
    if not seeds:
        return [seed]
    out: list[int] = []
    for part in seeds.split(","):
        part = part.strip()
        low, dash, high = part.partition("-")
        if dash and low.strip().isdigit() and high.strip().isdigit():
            out += range(int(low), int(high) + 1)
        elif part.isdigit():
            out.append(int(part))
        else:
            raise UsageError(f"--seeds: expected a list (1,2,5) or a range (1-20), got {seeds!r}")
    if not out or len(out) > SEEDS_MAX:
        raise UsageError(f"--seeds: 1..{SEEDS_MAX} seeds, got {len(out)}")
    return out


def options(args: argparse.Namespace) -> runner.Options:
    checks: list[tuple[str, float, float, float]] = [
        ("--duration-s", args.duration_s, 20.0, DURATION_MAX_S),
        ("--nodes", args.nodes, 1, 9),
        ("--shards", args.shards, 1, 16),
        ("--partitions", args.partitions, 1, 1000),
        ("--replication-factor", args.replication_factor, 1, args.nodes),
        ("--min-insync", args.min_insync, 1, args.replication_factor),
        ("--producers", args.producers, 1, 64),
        ("--consumers", args.consumers, 0, 16),
        ("--group-members", args.group_members, 0, 16),
        ("--rate", args.rate, 1.0, RATE_MAX),
    ]
    for flag, value, low, high in checks:
        if not low <= value <= high:
            raise UsageError(f"{flag}: expected {low:g}..{high:g}, got {value:g}")
    try:
        kinds = parse_kinds(args.faults)
    except ValueError as e:
        raise UsageError(f"--faults: {e}") from None
    missing = faults.unavailable(kinds)
    if missing:
        raise UsageError("--faults: " + "; ".join(missing))
    return runner.Options(
        duration_s=args.duration_s,
        kinds=kinds,
        nodes=args.nodes,
        shards=args.shards,
        partitions=args.partitions,
        replication_factor=args.replication_factor,
        min_insync=args.min_insync,
        producers=args.producers,
        consumers=args.consumers,
        group_members=args.group_members,
        rate=args.rate,
        keep_data=args.keep_data,
        broker_args=tuple(args.broker_arg),
    )


def check_usage(args: argparse.Namespace) -> tuple[list[int], runner.Options]:
    """The seeds and options, or UsageError with the reason (exit 2)."""
    return parse_seeds(args.seed, args.seeds), options(args)


def main(seeds: list[int], opts: runner.Options, out: Path | None) -> int:
    root = out or Path("bench/results") / f"chaos-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    verdicts: list[str] = []
    failed = False
    for seed in seeds:
        try:
            result = runner.run(seed, opts, root / f"seed-{seed}")
        except ClusterError as e:
            failed = True
            line = f"chaos seed={seed} duration={opts.duration_s:g}s verdict=FAIL error={str(e)[:300]!r}"
            print(line, flush=True)
            verdicts.append(line)
            continue
        failed |= not result.passed
        print(f"{result.out}: summary.md, summary.json, history/, node logs", flush=True)
        print(result.verdict, flush=True)
        verdicts.append(result.verdict)
    if len(seeds) > 1:
        (root / "verdicts.txt").write_text("\n".join(verdicts) + "\n")
        print(f"{sum('verdict=PASS' in v for v in verdicts)}/{len(seeds)} seeds passed; verdicts in {root}")
    return 1 if failed else 0
