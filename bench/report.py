"""What a run leaves in its output directory: ``results.csv`` (one row per broker and step, appended across runs),
``summary.md`` (the rows of this run as tables) and PNG plots (throughput per broker, latency percentiles per rate
class) made with matplotlib."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.runner import COLUMNS

# Shown in a workload's table only when one of its rows has them (the compaction workload's).
COMPACTION_COLUMNS = [
    ("cleaner_read_mb_s", "cleaner read MB/s"),
    ("cleaner_s", "cleaner s"),
    ("size_before_mb", "size before MB"),
    ("size_after_mb", "size after MB"),
    ("produce_p99_ratio", "ack p99 / baseline"),
    # the groups workload's
    ("commit_p50_us", "commit p50 us"),
    ("commit_p99_us", "commit p99 us"),
    ("rebalance_s", "rebalance s"),
]


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append ``rows``; a file with another header is rewritten under the current one (old rows kept)."""
    old: list[dict[str, str]] = []
    if path.exists():
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames != COLUMNS:
                old = list(reader)
    mode = "w" if old or not path.exists() else "a"
    with path.open(mode, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        if mode == "w":
            writer.writeheader()
            writer.writerows(old)
        writer.writerows(rows)


def _fmt(value: Any) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def summary(rows: list[dict[str, Any]], skipped: list[str], machine: str) -> str:
    lines = [f"# Benchmark run ({machine})", ""]
    if skipped:
        lines += ["Skipped:", "", *(f"- {s}" for s in skipped), ""]
    by_workload: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_workload[str(row["workload"])].append(row)
    for workload, items in by_workload.items():
        lines += [f"## {workload}", ""]
        if items[0]["broker"] == "machine":
            lines += ["| measure | MB/s | per second |", "|---|---|---|"]
            lines += [
                f"| {r['step']} | {_fmt(r.get('achieved_mb_s'))} | {_fmt(r.get('achieved_msgs_s'))} |" for r in items
            ]
        else:
            cols = [
                ("broker", "broker"),
                ("step", "step"),
                ("achieved_msgs_s", "msg/s"),
                ("achieved_mb_s", "MB/s"),
                ("target_attainment_pct", "% of target"),
                ("consumed_mb_s", "consumed MB/s"),
                ("produce_p50_us", "ack p50 us"),
                ("produce_p99_us", "ack p99 us"),
                ("e2e_p50_us", "e2e p50 us"),
                ("e2e_p99_us", "e2e p99 us"),
                ("e2e_max_us", "e2e max us"),
                ("recovery_s", "recovery s"),
                ("errors", "errors"),
                ("broker_cpu_s", "broker CPU s"),
                ("client_cpu_s", "client CPU s"),
                ("durability", "durability"),
            ]
            cols += [
                (key, title) for key, title in COMPACTION_COLUMNS if any(r.get(key) not in (None, "") for r in items)
            ]
            lines.append("| " + " | ".join(title for _, title in cols) + " |")
            lines.append("|" + "---|" * len(cols))
            for r in items:
                lines.append("| " + " | ".join(_fmt(r.get(key)) for key, _ in cols) + " |")
        lines.append("")
    comparison = listener_comparison(rows)
    if comparison:
        lines += ["## Secured listener against PLAINTEXT (rafka_shards)", "", *comparison, ""]
    return "\n".join(lines)


# What the listener comparison sets side by side: (column, title).
LISTENER_MEASURES = [
    ("achieved_mb_s", "acked MB/s"),
    ("consumed_mb_s", "consumed MB/s"),
    ("produce_p50_us", "ack p50 us"),
    ("produce_p99_us", "ack p99 us"),
    ("e2e_p50_us", "e2e p50 us"),
    ("e2e_p99_us", "e2e p99 us"),
    ("broker_cpu_s", "broker CPU s"),
]
BASELINE_LISTENER = "PLAINTEXT"


def listener_comparison(rows: list[dict[str, Any]]) -> list[str]:
    """rafka_shards on a secured listener against PLAINTEXT, step by step, for the steps run on both in this run
    (``--brokers rafka,rafka-sasl-ssl``): each measure of both and their ratio, secured / plaintext. A Markdown
    table, empty when there is nothing to compare."""
    by_step: dict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in rows:
        if str(r.get("broker", "")).startswith("rafka") and r.get("listener") and not r.get("errors"):
            by_step[(str(r["workload"]), str(r["step"]))][str(r["listener"])] = r
    lines: list[str] = []
    for (workload, step), by_listener in by_step.items():
        base = by_listener.get(BASELINE_LISTENER)
        for listener, r in by_listener.items():
            if base is None or listener == BASELINE_LISTENER:
                continue
            if not lines:
                lines += [
                    "| workload | step | listener | measure | PLAINTEXT | secured | secured / PLAINTEXT |",
                    "|---|---|---|---|---|---|---|",
                ]
            for key, title in LISTENER_MEASURES:
                plain, secured = _number(base.get(key)), _number(r.get(key))
                if math.isnan(plain) or math.isnan(secured):
                    continue
                ratio = f"{secured / plain:.2f}" if plain else ""
                shown = (round(plain), round(secured)) if key.endswith("_us") else (plain, secured)  # whole µs
                lines.append(
                    f"| {workload} | {step} | {listener} | {title} | {_fmt(shown[0])} | {_fmt(shown[1])} | {ratio} |"
                )
    return lines


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def plots(rows: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """One throughput chart per workload (MB/s per step, a bar per broker) and, where a workload has target rates,
    one latency chart (p50/p95/p99 end-to-end per broker and rate; acknowledgement latency per step for workloads
    without consumers). Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    by_workload: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["broker"] != "machine":
            by_workload[str(row["workload"])].append(row)
    for workload, items in by_workload.items():
        steps = list(dict.fromkeys(str(r["step"]) for r in items))
        brokers = list(dict.fromkeys(str(r["broker"]) for r in items))
        fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(steps) * len(brokers)), 4))
        width = 0.8 / max(1, len(brokers))
        for b, broker in enumerate(brokers):
            values = [
                next((_number(r.get("achieved_mb_s")) for r in items if r["broker"] == broker and r["step"] == s), 0.0)
                for s in steps
            ]
            ax.bar([i + b * width for i in range(len(steps))], values, width, label=broker)
        ax.set_xticks([i + width * (len(brokers) - 1) / 2 for i in range(len(steps))], steps, fontsize=8)
        ax.set_ylabel("produced MB/s (acknowledged)")
        written.append(_save(fig, ax, f"{workload}: throughput per broker", out_dir / f"{workload}-throughput.png"))

        # End-to-end latency where consumers measured it; else the producers' ack latency (compaction has no reader).
        kind = "e2e" if any(not math.isnan(_number(r.get("e2e_p99_us"))) for r in items) else "produce"
        rated = [
            r for r in items if _number(r.get("target_rate")) > 0 and not math.isnan(_number(r.get(f"{kind}_p99_us")))
        ]
        if not rated:
            continue
        fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(rated)), 4))
        if kind == "e2e":
            labels = [f"{r['broker']}\n{int(_number(r['target_rate'])):,}/s" for r in rated]
        else:
            labels = [f"{r['broker']}\n{r['step']}" for r in rated]
        for k, name in enumerate(("p50", "p95", "p99")):
            values = [_number(r.get(f"{kind}_{name}_us")) / 1000 for r in rated]
            ax.bar([i + k * 0.27 for i in range(len(rated))], values, 0.27, label=name)
        ax.set_xticks([i + 0.27 for i in range(len(rated))], labels, fontsize=8)
        ax.set_yscale("log")
        what = "end-to-end" if kind == "e2e" else "acknowledgement"
        ax.set_ylabel(f"{what} latency, ms (log)")
        title = (
            f"{workload}: latency percentiles per rate class" if kind == "e2e" else f"{workload}: ack latency per step"
        )
        written.append(_save(fig, ax, title, out_dir / f"{workload}-latency.png"))
    return written


def _save(fig: Any, ax: Any, title: str, path: Path) -> Path:
    import matplotlib.pyplot as plt

    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
