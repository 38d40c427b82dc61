"""The connection's per-request event-loop timer (``connection._timed``), which request_percentage quotas charge:
the handler's own steps count, its waits do not; results, exceptions and cancellations pass through unchanged."""

from __future__ import annotations

import asyncio

import pytest

from rafka_shards.shard.connection import _Metered, _timed


def test_waits_are_not_counted_and_the_result_passes() -> None:
    async def handler() -> str:
        await asyncio.sleep(1.0)  # a wait: an fsync, a long poll
        return "done"

    async def main() -> tuple[str, int]:
        m = _Metered(3, 12, "c", 100)
        return await _timed(handler(), m), m.loop_ns

    result, loop_ns = asyncio.run(main())
    assert result == "done"
    assert 0 < loop_ns < 500_000_000  # a second asleep; only the steps around it count


def test_steps_are_counted() -> None:
    async def handler() -> int:
        total = 0
        for _ in range(3):
            total += sum(range(200_000))  # work on the loop
            await asyncio.sleep(0)
        return total

    async def main() -> int:
        m = _Metered(0, 9, None, 1)
        await _timed(handler(), m)
        return m.loop_ns

    assert asyncio.run(main()) > 0


def test_exceptions_and_cancellation_pass_through() -> None:
    seen: list[str] = []

    async def failing() -> None:
        await asyncio.sleep(0)
        raise ValueError("bad")

    async def waiting() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def main() -> None:
        with pytest.raises(ValueError, match="bad"):
            await _timed(failing(), _Metered(0, 9, None, 1))
        task = asyncio.ensure_future(_timed(waiting(), _Metered(0, 9, None, 1)))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert seen == ["cancelled"]
