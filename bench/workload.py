"""Workloads: small declarative TOML files in ``bench/workloads/``, in the spirit of the OpenMessaging Benchmark.

A workload names the load (topics, partitions, message size, producers, consumers, acks, compression, linger, batch
size, target rates, duration, warm-up) and expands into *steps*: one per target rate, partition count or shard
count it lists. Kinds: ``stream`` (produce and consume at once), ``recovery`` (SIGKILL with ``data_mb`` on disk),
``limits`` (the machine's ceilings) and ``compaction`` (rafka_shards' log cleaner over ``data_mb`` MiB of values
with ``keys`` distinct keys, against produce latency at the step's fixed rate; see ``bench/compaction.py``). Every
field is checked when the file is read: an unknown field, a wrong type or an impossible value
(a negative rate, zero partitions) is a ``WorkloadError`` naming the file and the field, before anything starts.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WORKLOADS_DIR = Path(__file__).resolve().parent / "workloads"
KINDS = ("stream", "recovery", "limits", "compaction", "groups")
ACKS = ("0", "1", "all")
COMPRESSIONS = ("none", "gzip", "snappy", "lz4", "zstd")
PARTITIONS_MAX = 100_000
RATE_MAX = 10_000_000
MESSAGE_SIZE_MAX = 1024 * 1024
CLIENTS_MAX = 64
DURATION_MAX_S = 3600
KEYS_MAX = 100_000_000


class WorkloadError(Exception):
    """A workload that cannot run: the message names the file and the field."""


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    kind: str = "stream"
    topics: int = 1
    partitions: tuple[int, ...] = (8,)
    message_size: int = 1024
    producers: int = 1
    consumers: int = 1
    acks: str = "all"
    compression: str = "none"
    linger_ms: int = 5
    batch_size: int = 1_048_576
    rates: tuple[int, ...] = (0,)  # target msg/s over all producers; 0: as fast as they go
    duration_s: float = 10.0
    warmup_s: float = 2.0
    messages_max: int = 5_000_000  # per step, over all producers: the count bound of every run
    shards: tuple[int, ...] = (1,)  # rafka_shards only: a step per shard count
    data_mb: int = 256  # recovery: MB (10**6 bytes) on disk before the SIGKILL; compaction: MiB of values to clean
    keys: int = 100_000  # compaction: the distinct keys, each value's drawn uniformly

    def steps(self) -> list[Step]:
        """One step per (shard count, partition count, rate) the workload lists, in that order."""
        return [
            Step(self, i, shards, partitions, rate)
            for i, (shards, partitions, rate) in enumerate(
                (s, p, r) for s in self.shards for p in self.partitions for r in self.rates
            )
        ]


@dataclass(frozen=True)
class Step:
    workload: Workload
    index: int
    shards: int
    partitions: int
    rate: int

    @property
    def label(self) -> str:
        w = self.workload
        parts = []
        if len(w.shards) > 1:
            parts.append(f"{self.shards} shard(s)")
        if len(w.partitions) > 1:
            parts.append(f"{self.partitions} partitions")
        if len(w.rates) > 1 or self.rate or w.kind == "stream":
            parts.append(f"{self.rate} msg/s" if self.rate else "max rate")
        return ", ".join(parts) or w.kind


_INT_FIELDS = {
    "topics": (1, 100),
    "message_size": (16, MESSAGE_SIZE_MAX),  # 16: room for the send timestamp and sequence in every message
    "producers": (1, CLIENTS_MAX),
    "consumers": (0, CLIENTS_MAX),
    "linger_ms": (0, 60_000),
    "batch_size": (1, 64 * 1024 * 1024),
    "messages_max": (1, 1_000_000_000),
    "data_mb": (1, 1_000_000),
    "keys": (1, KEYS_MAX),
}
_LIST_FIELDS = {"partitions": (1, PARTITIONS_MAX), "rates": (0, RATE_MAX), "shards": (1, 256)}
_FLOAT_FIELDS = {"duration_s": (0.1, DURATION_MAX_S), "warmup_s": (0.0, DURATION_MAX_S)}
_CHOICES = {"kind": KINDS, "acks": ACKS, "compression": COMPRESSIONS}


def available() -> list[str]:
    return sorted(p.stem for p in WORKLOADS_DIR.glob("*.toml"))


def load(name_or_path: str) -> Workload:
    """A workload by name (a file in ``bench/workloads/``) or by path."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = WORKLOADS_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise WorkloadError(f"unknown workload {name_or_path!r}; known: {', '.join(available())}")
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise WorkloadError(f"{path}: {e}") from None
    return parse(data, source=str(path), default_name=path.stem)


def parse(data: dict[str, Any], source: str = "workload", default_name: str = "") -> Workload:
    fields = {f.name for f in dataclasses.fields(Workload)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise WorkloadError(f"{source}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
    values: dict[str, Any] = {"name": default_name, "description": ""}
    for key, value in data.items():
        values[key] = _check(source, key, value)
    if not values["name"]:
        raise WorkloadError(f"{source}: name: missing")
    w = Workload(**values)
    if w.warmup_s >= w.duration_s:
        raise WorkloadError(f"{source}: warmup_s ({w.warmup_s}) must be shorter than duration_s ({w.duration_s})")
    if w.kind == "compaction":
        _check_compaction(source, w)
    if w.kind == "groups" and (len(w.rates) != 1 or 0 in w.rates or w.consumers < 2):
        raise WorkloadError(f"{source}: groups needs one fixed rate (rates = [10_000]) and consumers >= 2")
    return w


def _check_compaction(source: str, w: Workload) -> None:
    """A compaction step compares produce latency at a fixed rate with and without the cleaner: a flat-out rate
    would compare two saturated brokers, and consumers would read the whole filled log."""
    if 0 in w.rates:
        raise WorkloadError(f"{source}: rates: compaction measures latency at fixed rates; 0 (flat out) is not one")
    if w.consumers:
        raise WorkloadError(f"{source}: consumers: compaction measures produce latency only; set consumers = 0")


def _check(source: str, key: str, value: Any) -> Any:
    where = f"{source}: {key}"
    if key in ("name", "description"):
        if not isinstance(value, str):
            raise WorkloadError(f"{where}: expected a string")
        return value
    if key in _CHOICES:
        text = str(value) if key == "acks" and isinstance(value, int) and not isinstance(value, bool) else value
        if text not in _CHOICES[key]:
            raise WorkloadError(f"{where}: expected one of {', '.join(_CHOICES[key])}, got {value!r}")
        return text
    if key in _INT_FIELDS:
        return _int(where, value, *_INT_FIELDS[key])
    if key in _LIST_FIELDS:
        items = value if isinstance(value, list) else [value]
        if not items:
            raise WorkloadError(f"{where}: expected at least one value")
        return tuple(_int(where, v, *_LIST_FIELDS[key]) for v in items)
    lo, hi = _FLOAT_FIELDS[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise WorkloadError(f"{where}: expected a number of seconds {lo}..{hi}, got {value!r}")
    return float(value)


def _int(where: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise WorkloadError(f"{where}: expected an integer {lo}..{hi}, got {value!r}")
    return value
