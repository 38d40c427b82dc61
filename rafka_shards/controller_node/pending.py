"""Requests of this node waiting on its Raft log: proposals until their entry is applied, ReadIndex reads until the
leader has confirmed their index.

Runs in the controller process; the frontend adds a request and awaits its future, the backend (the Ready loop)
resolves it. A proposal's future gets its index once the entry is applied at the term it was proposed in, or
CommandRejected(CONTROLLER_UNAVAILABLE) when another leader's entry took that index or a snapshot replaced it.
Bounded: the frontend refuses a request past ``proposals_max`` / ``reads_max`` (``full``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from controller.raft.types import Entry, Term
from rafka_shards.controller_node.errors import unavailable


@dataclass(slots=True)
class _Waiter:
    term: Term
    future: asyncio.Future[int]


class Pending:
    def __init__(self, proposals_max: int, reads_max: int) -> None:
        self.proposals_max = proposals_max
        self.reads_max = reads_max
        self._waiters: dict[int, _Waiter] = {}  # by log index
        self._reads: dict[int, asyncio.Future[int]] = {}  # ReadIndex requests of this leader, by ctx
        self._next_read = 0

    @property
    def proposals(self) -> int:
        return len(self._waiters)

    @property
    def reads(self) -> int:
        return len(self._reads)

    def proposed(self, index: int, term: Term) -> asyncio.Future[int]:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters[index] = _Waiter(term, fut)
        return fut

    def applied(self, entry: Entry) -> None:
        waiter = self._waiters.pop(entry.index, None)
        if waiter is None or waiter.future.done():
            return
        if waiter.term == entry.term:
            waiter.future.set_result(entry.index)
        else:
            waiter.future.set_exception(unavailable("leadership moved before the entry committed; retry"))

    def replaced_up_to(self, index: int) -> None:
        """A snapshot up to ``index`` replaced the log: whatever this node proposed there may not have committed."""
        for at in [i for i in self._waiters if i <= index]:
            waiter = self._waiters.pop(at)
            if not waiter.future.done():
                waiter.future.set_exception(unavailable("replaced by the leader's snapshot; retry"))

    def next_read_ctx(self) -> int:
        self._next_read += 1
        return self._next_read

    def read(self, ctx: int) -> asyncio.Future[int]:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._reads[ctx] = fut
        return fut

    def forget_read(self, ctx: int) -> None:
        self._reads.pop(ctx, None)

    def read_confirmed(self, ctx: int, index: int) -> None:
        fut = self._reads.get(ctx)
        if fut is not None and not fut.done():
            fut.set_result(index)

    def fail_reads(self, why: str) -> None:
        """A node that stepped down drops its pending reads: their callers retry with the new leader."""
        for fut in self._reads.values():
            if not fut.done():
                fut.set_exception(unavailable(why))
        self._reads.clear()

    def cancel(self) -> None:
        for waiter in self._waiters.values():
            if not waiter.future.done():
                waiter.future.cancel()
