"""Shared expectations for the client tests: the messages to send and how to compare what comes back."""

from __future__ import annotations

from dataclasses import dataclass

BASE_TS = 1_700_000_000_000


@dataclass(frozen=True)
class Msg:
    partition: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp: int


def messages(n: int, partitions: int, tag: str = "") -> list[Msg]:
    out = []
    for i in range(n):
        value: bytes | None = f"value-{tag}-{i}".encode() * (1 + i % 7)
        if i % 17 == 5:
            value = None
        elif i % 17 == 6:
            value = b""
        # A null key and a null value together are refused by kafka-python, so never both.
        key = None if i % 11 == 3 and value is not None else f"key-{i}".encode()
        headers = ((f"h{i % 3}", f"hv{i}".encode()),) if i % 4 else ()
        out.append(Msg(i % partitions, key, value, headers, BASE_TS + i))
    return out


def by_partition(msgs: list[Msg]) -> dict[int, list[Msg]]:
    out: dict[int, list[Msg]] = {}
    for m in msgs:
        out.setdefault(m.partition, []).append(m)
    return out
