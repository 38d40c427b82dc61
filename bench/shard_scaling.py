"""Shard scaling: the same broker-bound workload against 1 shard and against N shards, and the throughput ratio.

    python bench/shard_scaling.py                     # 64 partitions, 1 KiB, linger 1 ms, acks=1, 1 vs 2 shards, kcat
    python bench/shard_scaling.py --shards 4 --messages 1000000

The workload makes the broker, not the client, the limit as far as one machine allows: many partitions and small
batches (linger 1 ms) mean many produce requests and batches per MB, which is where a shard spends its CPU. Each
run starts its own node in a temporary directory (``bench/produce_consume.py``), appends its row to
``bench/results/produce_consume.csv``, and a summary row with the ratio goes to ``bench/results/shard_scaling.csv``.
Bounded by the message count and --max-seconds per phase; 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from produce_consume import append_csv, parser, run


def main() -> int:
    ap = parser()
    ap.set_defaults(
        partitions=64, size=1024, acks="1", linger_ms=1, messages=400_000, producers=1, shards=2, client="kcat"
    )
    ap.add_argument("--repeat", type=int, default=1, help="runs per shard count; the best of each is compared")
    args = ap.parse_args()
    results: dict[int, list[dict[str, object]]] = {}
    for shards in (1, args.shards):
        for _ in range(args.repeat):
            row = run(argparse.Namespace(**{**vars(args), "shards": shards}))
            append_csv(args.out, row)
            results.setdefault(shards, []).append(row)
    best = {n: max(rows, key=lambda r: float(r["produce_mb_s"])) for n, rows in results.items()}  # type: ignore[arg-type]
    one, many = best[1], best[args.shards]
    summary = {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "partitions": args.partitions,
        "size": args.size,
        "acks": args.acks,
        "linger_ms": args.linger_ms,
        "producers": args.producers,
        "messages": args.messages,
        "shards": args.shards,
        "produce_mb_s_1": one["produce_mb_s"],
        "produce_mb_s_n": many["produce_mb_s"],
        "ratio": round(float(many["produce_mb_s"]) / float(one["produce_mb_s"]), 2),  # type: ignore[arg-type]
        "broker_cpu_s_per_mb_1": one["broker_cpu_s_per_mb_produce"],
        "broker_cpu_s_per_mb_n": many["broker_cpu_s_per_mb_produce"],
        "producer_cpu_s_1": one["producer_cpu_s"],
        "producer_cpu_s_n": many["producer_cpu_s"],
        "produce_s_1": one["produce_s"],
        "produce_s_n": many["produce_s"],
    }
    print()
    for k, v in summary.items():
        print(f"{k:30} {v}")
    append_csv(args.out.parent / "shard_scaling.csv", summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
