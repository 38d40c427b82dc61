"""``python -m bench run WORKLOAD... [--brokers rafka,tansu,nats,redis] [--out DIR]``: the perf harness;
``python -m bench chaos [--seed N | --seeds 1-20] [--duration-s S] [--faults ...]``: the Jepsen-style verifier
(``bench/chaos/``).

Runs each workload from ``bench/workloads/`` against each broker in turn (each started fresh on 127.0.0.1 with its
data in a temporary directory, stopped afterwards) and writes ``results.csv``, ``summary.md`` and PNG plots to the
output directory. A broker that cannot be installed or started is skipped with a line saying why. Exit codes: 0 when
every step ran, 1 when nothing could run or a step failed (an unreachable ``--bootstrap`` broker), 2 for bad usage
(an unknown workload or field, impossible values), 130 when interrupted; every process and temporary directory the
run started is removed in all cases.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import compaction, consumer_groups, peers, report, runner, workload
from bench.chaos import cli as chaos_cli
from bench.workload import WorkloadError

DEFAULT_BROKERS = "rafka,tansu,nats,redis"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="The rafka_shards perf harness: the same workloads against rafka_shards and peer brokers, in one "
        "run on one machine, written as CSV, a Markdown summary and plots.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the workloads with their descriptions")
    run = sub.add_parser(
        "run",
        help="run a workload",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Run WORKLOAD (a name from bench/workloads/ or a path to a .toml file) against each broker. "
        "Workload fields: " + ", ".join(f.name for f in __import__("dataclasses").fields(workload.Workload)) + ".",
    )
    run.add_argument(
        "workload",
        nargs="+",
        help=f"one or more (in turn, into one CSV and summary) of: {', '.join(workload.available())}; or .toml paths",
    )
    run.add_argument(
        "--brokers",
        default=DEFAULT_BROKERS,
        help="comma-separated brokers to compare: rafka (this project), tansu (Kafka-compatible, Rust), nats (NATS "
        "JetStream), redis (Redis Streams)",
    )
    run.add_argument(
        "--bootstrap",
        default="",
        metavar="HOST:PORT",
        help="also run against an already running Kafka-compatible broker (not started or stopped by the harness)",
    )
    run.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output directory (default: bench/results/run-<UTC time>); results.csv there is appended to",
    )
    run.add_argument("--duration-s", type=float, default=None, help="override every step's duration (seconds)")
    run.add_argument("--warmup-s", type=float, default=None, help="override the unmeasured warm-up (seconds)")
    run.add_argument("--messages-max", type=int, default=None, help="override the per-step message cap")
    run.add_argument("--partitions-max", type=int, default=None, help="cap every step's partition count")
    run.add_argument(
        "--data-mb",
        type=int,
        default=None,
        help="recovery: override the MB written before SIGKILL; compaction: the MiB of values to clean",
    )
    run.add_argument("--keys", type=int, default=None, help="compaction: override the distinct keys of the values")
    run.add_argument("--no-progress", action="store_true", help="no progress bar (logs instead)")
    chaos_cli.add_parser(sub)
    return parser


def _overrides(args: argparse.Namespace, w: workload.Workload) -> runner.Overrides:
    checks: list[tuple[str, Any, float, float]] = [
        ("--duration-s", args.duration_s, 0.1, workload.DURATION_MAX_S),
        ("--warmup-s", args.warmup_s, 0.0, workload.DURATION_MAX_S),
        ("--messages-max", args.messages_max, 1, 1_000_000_000),
        ("--partitions-max", args.partitions_max, 1, workload.PARTITIONS_MAX),
        ("--data-mb", args.data_mb, 1, 1_000_000),
        ("--keys", args.keys, 1, workload.KEYS_MAX),
    ]
    for flag, value, lo, hi in checks:
        if value is not None and not lo <= value <= hi:
            raise WorkloadError(f"{flag}: expected {lo}..{hi}, got {value}")
    duration = args.duration_s if args.duration_s is not None else w.duration_s
    warmup = args.warmup_s if args.warmup_s is not None else w.warmup_s
    if w.kind in ("stream", "compaction") and warmup >= duration:
        raise WorkloadError(f"the warm-up ({warmup} s) must be shorter than the duration ({duration} s)")
    return runner.Overrides(
        args.duration_s, args.warmup_s, args.messages_max, args.partitions_max, args.data_mb, args.keys
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "list":
        for name in workload.available():
            print(f"{name:18} {workload.load(name).description}")
        return 0
    if args.command == "chaos":
        return _chaos(args)
    try:
        ws = [workload.load(name) for name in args.workload]
        checked = [_overrides(args, w) for w in ws]  # one set for all, checked against each workload
        overrides = checked[0]
        names = [b.strip() for b in args.brokers.split(",") if b.strip()]
        unknown = [n for n in names if n not in peers.FACTORIES]
        if unknown:
            raise WorkloadError(f"--brokers: unknown {', '.join(unknown)}; known: {', '.join(peers.FACTORIES)}")
    except WorkloadError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    out = args.out or Path("bench/results") / f"run-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="rafka-bench-"))
    try:
        return _run(args, ws, overrides, names, out, work)
    except KeyboardInterrupt:
        print("bench: interrupted; brokers and clients stopped, temporary data removed", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _chaos(args: argparse.Namespace) -> int:
    try:
        seeds, opts = chaos_cli.check_usage(args)
    except chaos_cli.UsageError as e:
        print(f"bench chaos: {e}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return chaos_cli.main(seeds, opts, args.out)
    except KeyboardInterrupt:
        print("bench chaos: interrupted; nodes and clients stopped", file=sys.stderr)
        return 130


def _interrupt(_signum: int, _frame: object) -> None:
    """SIGTERM ends the run like Ctrl-C: through the finally blocks that stop brokers and clients."""
    raise KeyboardInterrupt


def _run(
    args: argparse.Namespace,
    ws: list[workload.Workload],
    overrides: runner.Overrides,
    names: list[str],
    out: Path,
    work: Path,
) -> int:
    """Every workload in turn, each against every broker; one CSV, summary and set of plots for the whole run."""
    commit = runner.git_commit()
    machine = f"{os.cpu_count()} CPUs, {platform.python_version()}, {platform.platform()}, commit {commit}"
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    failed = False
    for w in ws:
        w_rows, w_skipped, w_failed, runnable = _run_workload(args, w, overrides, names, work, commit)
        rows += w_rows
        skipped += [f"{line} ({w.name})" if len(ws) > 1 else line for line in w_skipped]
        failed = failed or w_failed
        if not runnable:
            return 1
    return _finish(rows, skipped, machine, out, failed or any(int(r.get("errors") or 0) for r in rows))


def _run_workload(
    args: argparse.Namespace,
    w: workload.Workload,
    overrides: runner.Overrides,
    names: list[str],
    work: Path,
    commit: str,
) -> tuple[list[dict[str, Any]], list[str], bool, bool]:
    """The rows of ``w`` against each broker, what was skipped, whether a step failed, and whether anything could
    run at all (False: the run stops with exit 1)."""
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    failed = False
    if w.kind == "limits":
        return list(runner.limits(w, overrides, work, commit)), skipped, failed, True

    brokers = _brokers(w, names, skipped)
    if args.bootstrap and w.kind == "compaction":
        skipped.append(f"--bootstrap {args.bootstrap}: compaction restarts the broker, which the harness did not start")
    elif args.bootstrap:
        try:
            external = peers.External(args.bootstrap)
            external.start(work)
        except peers.Unavailable as e:
            print(f"bench: {e}", file=sys.stderr)
            return rows, skipped, True, False
        brokers.append(external)
    for line in skipped:
        print(f"skipped {line}", file=sys.stderr)
    if not brokers:
        print("bench: no broker could run; nothing measured", file=sys.stderr)
        return rows, skipped, True, False

    step_runner = runner.StepRunner(w, overrides, work, commit)
    steps = _distinct_steps(w.steps(), step_runner)
    progress = _progress(len(steps) * len(brokers), args.no_progress)
    try:
        for broker in brokers:
            for step in steps:
                progress.set_description(f"{broker.name}: {step.label}")
                started = time.monotonic()
                step_rows, step_failed = _step(step_runner, broker, step, progress)
                failed = failed or step_failed
                for row in step_rows:
                    rows.append(row)
                    progress.write(
                        f"{broker.name:6} {row.get('step', step.label)!s:22} {row.get('achieved_mb_s', '')!s:>8} MB/s  "
                        f"ack p99 {row.get('produce_p99_us', '')!s:>8} us  "
                        f"e2e p99 {row.get('e2e_p99_us', '')!s:>8} us  errors {row.get('errors', '')}  "
                        f"({time.monotonic() - started:.0f} s)"
                    )
                progress.update(1)
    finally:
        progress.close()
    return rows, skipped, failed, True


def _distinct_steps(steps: list[workload.Step], step_runner: runner.StepRunner) -> list[workload.Step]:
    """The steps that differ once ``--partitions-max`` capped their partition counts (many-partitions' 100, 1,000 and
    10,000 partitions under a cap of 16 are one step): each is run once, under its first label; a line says so."""
    seen: dict[tuple[int, int, int], workload.Step] = {}
    for step in steps:
        key = (step.shards, step_runner.partitions(step), step.rate)
        if key in seen:
            print(f"step {step.label}: the same as {seen[key].label} under --partitions-max; run once", file=sys.stderr)
            continue
        seen[key] = step
    return list(seen.values())


def _brokers(w: workload.Workload, names: list[str], skipped: list[str]) -> list[peers.Broker]:
    """The named brokers that can run ``w`` here; a line in ``skipped`` for each of the others."""
    brokers: list[peers.Broker] = []
    for name in names:
        broker = peers.make(name)
        if broker.listener not in ("", "PLAINTEXT") and w.kind in ("groups", "compaction"):
            skipped.append(f"{name}: {w.name} runs its clients on a PLAINTEXT listener only")
            continue
        if len(w.shards) > 1 and not isinstance(broker, peers.Rafka):
            skipped.append(f"{name}: {w.name} varies rafka_shards' shard count; it has no equivalent")
            continue
        if w.kind == "recovery" and name == "tansu":
            skipped.append("tansu: memory-only storage, nothing on disk to recover")
            continue
        if w.kind == "groups" and broker.protocol != "kafka":
            skipped.append(f"{name}: {w.name} measures the Kafka group protocol, which it does not speak")
            continue
        if w.kind == "compaction" and name != "rafka":
            skipped.append(f"{name}: compaction measures rafka_shards' log cleaner through its admin API")
            continue
        try:
            broker.check()
        except peers.Unavailable as e:
            skipped.append(f"{name}: {e}")
            continue
        brokers.append(broker)
    return brokers


def _step(
    step_runner: runner.StepRunner, broker: peers.Broker, step: workload.Step, progress: Any
) -> tuple[list[dict[str, Any]], bool]:
    """The rows of one step against one broker, and whether it failed (then one row, with the reason)."""
    w = step_runner.workload
    try:
        if w.kind == "recovery":
            return [step_runner.recovery(broker, step)], False
        if w.kind == "compaction" and isinstance(broker, peers.Rafka):
            return compaction.run(step_runner, broker, step), False
        if w.kind == "groups":
            return consumer_groups.run(step_runner, broker, step), False
        return [step_runner.stream(broker, step)], False
    except (peers.Unavailable, RuntimeError) as e:
        progress.write(f"{broker.name} / {step.label}: failed: {e}")
        return [{**step_runner.base_row(broker, step), "errors": 1, "note": str(e)[:500]}], True


def _finish(rows: list[dict[str, Any]], skipped: list[str], machine: str, out: Path, failed: bool) -> int:
    report.write_csv(out / "results.csv", rows)
    (out / "summary.md").write_text(report.summary(rows, skipped, machine))
    pictures = report.plots(rows, out)
    comparison = report.listener_comparison(rows)
    if comparison:
        print("rafka_shards, secured listener against PLAINTEXT (ratio: secured / PLAINTEXT):")
        print("\n".join(comparison))
    print(f"wrote {out / 'results.csv'}, {out / 'summary.md'} and {len(pictures)} plot(s) in {out}")
    return 1 if failed else 0


class _Quiet:
    """Stands in for tqdm with --no-progress."""

    def set_description(self, _text: str) -> None:
        pass

    def write(self, text: str) -> None:
        print(text, flush=True)

    def update(self, _n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, quiet: bool) -> Any:
    if quiet:
        return _Quiet()
    from tqdm import tqdm

    return tqdm(total=total, unit="step", dynamic_ncols=True)


if __name__ == "__main__":
    sys.exit(main())
