""" "``event_loop.within``: a bounded wait that never loses the cancellation of the waiting task; ``settle_heap``;
``quick_thread_handoff``; ``close_quietly``."""

from __future__ import annotations

import asyncio
import gc
import socket
import struct
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from rafka_shards import event_loop
from rafka_shards.event_loop import within


async def _finish_and_cancel_in_one_step(wait: Callable[[asyncio.Future[int]], Awaitable[Any]]) -> asyncio.Task[Any]:
    """A task waits on a future; in one loop step the future completes and the task is cancelled (a notification
    arriving while the process shuts down). Returns the task, finished."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[int] = loop.create_future()
    task = loop.create_task(wait(fut))
    await asyncio.sleep(0)  # the task now waits
    fut.set_result(7)
    task.cancel()
    await asyncio.wait([task])
    return task


def test_within_raises_the_cancellation_even_when_the_awaited_future_finished_in_the_same_step() -> None:
    async def main() -> None:
        task = await _finish_and_cancel_in_one_step(lambda fut: within(fut, 10))
        assert task.cancelled()

    asyncio.run(main())


def test_within_times_out_and_returns_results() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert await within(asyncio.sleep(0, "done"), 1) == "done"
        never: asyncio.Future[None] = loop.create_future()
        with pytest.raises(TimeoutError):
            await within(never, 0.01)
        assert never.cancelled()

    asyncio.run(main())


def test_settle_heap_takes_the_startup_objects_out_of_the_collectors_walk() -> None:
    """After ``settle_heap`` a full collection walks only what was allocated since: the modules' functions, types and
    fields a shard imports (~100,000 objects) are frozen."""
    code = (
        "import gc, rafka_shards.shard.shard\n"
        "from rafka_shards import event_loop\n"
        "before = len(gc.get_objects())\n"
        "event_loop.settle_heap()\n"
        "print(before, len(gc.get_objects()), gc.get_freeze_count())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    before, after, frozen = map(int, out.stdout.split())
    assert before > 10_000 and after < before // 10 and frozen > before // 2


def test_quick_thread_handoff_shortens_the_gil_switch_interval_tenfold() -> None:
    """A process that calls it hands the GIL to a waiting thread (an fsync that returned) after 0.5 ms, not 5 ms."""
    code = "import sys\nfrom rafka_shards import event_loop\nbefore = sys.getswitchinterval()\n"
    code += "event_loop.quick_thread_handoff()\nprint(before, sys.getswitchinterval())\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    before, after = map(float, out.stdout.split())
    assert before == 0.005 and after == 0.0005


def test_close_quietly_retrieves_a_reset_so_asyncio_never_logs_it() -> None:
    """A stream whose peer reset it: after ``close_quietly`` the protocol's close future holds no unretrieved
    exception, whatever order the garbage collector finalizes things in."""

    async def main() -> list[dict[str, object]]:
        loop = asyncio.get_running_loop()
        reported: list[dict[str, object]] = []
        loop.set_exception_handler(lambda _loop, context: reported.append(context))
        ours = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener = socket.create_server(("127.0.0.1", 0))
        ours.connect(listener.getsockname())
        theirs, _ = listener.accept()
        listener.close()
        reader, writer = await asyncio.open_connection(sock=ours)
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        theirs.close()  # RST
        with pytest.raises(ConnectionError):
            while await reader.read(1024):
                pass
            raise ConnectionResetError  # an orderly EOF instead: the point of the test is the reset path
        protocol = writer._protocol  # type: ignore[attr-defined]
        await event_loop.close_quietly(writer)
        closed = protocol._closed
        assert closed.done() and not closed._log_traceback  # retrieved: nothing to log at finalization
        del reader, writer, protocol, closed
        gc.collect()
        await asyncio.sleep(0)
        return reported

    assert asyncio.run(main()) == []
