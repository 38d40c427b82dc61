"""The outcome of a chaos run: ``summary.json``, ``summary.md`` (unavailability per fault kind, the findings with
examples) and the one-line verdict. Runs in the bench's orchestrating process; it only formats."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.chaos.checker import FaultRecord, Findings
from bench.chaos.group_check import GroupFindings


def verdict_line(
    seed: int, duration_s: float, faults: int, f: Findings, notes: list[str], g: GroupFindings | None = None
) -> str:
    passed = f.passed and not f.fatal_errors and not notes and (g is None or g.passed)
    group = ""
    if g is not None:
        group = (
            f"group_commits={g.commits} group_commits_lost={g.commits_lost} "
            f"group_commits_backwards={g.commits_backwards} group_skipped={g.skipped} "
            f"group_unconsumed={g.unconsumed} "
        )
    return (
        f"chaos seed={seed} duration={duration_s:g}s faults={faults} acked={f.acked} lost={f.lost} "
        f"misplaced={f.misplaced} duplicated={f.duplicated} reordered={f.reordered} "
        f"hw_regressions={f.hw_regressions} replica_diffs={f.replica_diffs} fatal_errors={f.fatal_errors} "
        f"{group}verdict={'PASS' if passed else 'FAIL'}"
    )


def summary(
    seed: int,
    options: dict[str, Any],
    plan: dict[str, Any],
    faults: list[FaultRecord],
    outcomes_notes: list[str],
    f: Findings,
    notes: list[str],
    verdict: str,
    g: GroupFindings | None = None,
) -> dict[str, Any]:
    group_counts = {}
    if g is not None:
        group_counts = {
            "group_reads": g.reads,
            "group_commits": g.commits,
            "group_member_incarnations": g.members,
            "group_commits_lost": g.commits_lost,
            "group_commits_backwards": g.commits_backwards,
            "group_skipped": g.skipped,
            "group_unconsumed": g.unconsumed,
        }
    return {
        "seed": seed,
        "verdict": verdict,
        "passed": verdict.endswith("verdict=PASS"),
        "options": options,
        "counts": {
            "acked": f.acked,
            "errors": f.errors,
            "fatal_errors": f.fatal_errors,
            "error_kinds": f.error_kinds,
            "final_records": f.final_records,
            "final_unread": f.final_unread,
            "lost": f.lost,
            "misplaced": f.misplaced,
            "duplicated": f.duplicated,
            "reordered": f.reordered,
            "hw_regressions": f.hw_regressions,
            "replica_diffs": f.replica_diffs,
            **group_counts,
        },
        "notes": notes,
        "examples": {**f.examples, **(g.examples if g is not None else {})},
        "unavailability_by_kind": f.unavailability_by_kind(),
        "faults": [
            {**asdict(r), "unavailable_s": u.seconds, "recovered": u.recovered, "note": n}
            for r, u, n in zip(faults, f.unavailability, outcomes_notes, strict=True)
        ],
        "plan": plan,
    }


def markdown(s: dict[str, Any]) -> str:
    c = s["counts"]
    lines = [
        f"# chaos seed {s['seed']}",
        "",
        f"`{s['verdict']}`",
        "",
        f"Options: {', '.join(f'{k}={v}' for k, v in s['options'].items())}.",
        "",
        "| check | count |",
        "|---|---|",
        *(f"| {k} | {c[k]} |" for k in c if k != "error_kinds"),
        "",
        f"Producer errors by kind: {json.dumps(c['error_kinds']) if c['error_kinds'] else 'none'}.",
        "",
        "## Unavailability per fault kind (seconds until produce worked again on every partition)",
        "",
        "| fault | count | median s | max s | not recovered before the next fault |",
        "|---|---|---|---|---|",
        *(
            f"| {k} | {v['faults']} | {v['median_s']} | {v['max_s']} | {v['not_recovered']} |"
            for k, v in s["unavailability_by_kind"].items()
        ),
        "",
        "## Faults",
        "",
        "| # | kind | target | injected at s | healed after s | unavailable s | note |",
        "|---|---|---|---|---|---|---|",
    ]
    start = s["faults"][0]["injected_s"] if s["faults"] else 0.0
    for x in s["faults"]:
        unavailable = f"{x['unavailable_s']:.2f}" + ("" if x["recovered"] else " (not recovered)")
        lines.append(
            f"| {x['index']} | {x['kind']} | {x['target']} | {x['injected_s'] - start:.1f} | "
            f"{x['healed_s'] - x['injected_s']:.1f} | {unavailable} | {x['note']} |"
        )
    if s["notes"]:
        lines += ["", "## Notes", "", *(f"- {n}" for n in s["notes"])]
    for check, examples in s["examples"].items():
        lines += ["", f"## {check} (first {len(examples)})", "", *(f"- {e}" for e in examples)]
    return "\n".join(lines) + "\n"


def write(out: Path, s: dict[str, Any]) -> None:
    (out / "summary.json").write_text(json.dumps(s, indent=2) + "\n")
    (out / "summary.md").write_text(markdown(s))
    (out / "verdict.txt").write_text(s["verdict"] + "\n")
