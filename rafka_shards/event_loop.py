"""What every process of a node does the same way with its event loop: run it, and notice its parent dying."""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import gc
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import setproctitle

T = TypeVar("T")

PARENT_CHECK_INTERVAL_S = 1.0
AWAIT_CHAIN_MAX = 64  # coroutines listed per task by describe_tasks
PROCESS_TITLE_PREFIX = "rafka_shards: "
# How long a thread that wants the GIL waits before the running thread is asked to let go (CPython's default: 5 ms).
GIL_SWITCH_INTERVAL_S = 0.0005


def run(main: Coroutine[Any, Any, int]) -> int:
    """Run ``main`` to completion on uvloop (a dependency), or on plain asyncio where uvloop cannot be imported.

    A stuck process can be read without stopping it: SIGUSR1 writes every thread's Python stack to stderr (the
    node's log; it works while the loop itself is blocked), SIGUSR2 every asyncio task with the chain of awaits it is
    suspended in (where a coroutine waits). A fatal signal (SIGSEGV, SIGABRT) writes the thread stacks too."""
    faulthandler.enable(all_threads=True)
    faulthandler.register(signal.SIGUSR1, all_threads=True, chain=False)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_with_task_dumps(main))
    return int(uvloop.run(_with_task_dumps(main)))


async def _with_task_dumps(main: Coroutine[Any, Any, int]) -> int:
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR2, lambda: sys.stderr.write(describe_tasks()))
    return await main


def name_process(role: str) -> None:
    """What ``ps``, ``top`` and ``/proc/PID/cmdline`` show for this process: ``rafka_shards: <role>``, so an operator
    tells the supervisor, the controller and each shard apart (all of them are ``python -B -c from
    multiprocessing.spawn import ...`` otherwise). Kafka and Redpanda are one process; a node here is several."""
    setproctitle.setproctitle(f"{PROCESS_TITLE_PREFIX}{role}")


def settle_heap() -> None:
    """Move every object alive now (modules, classes, functions, the startup state) out of the garbage collector's
    reach (``gc.freeze``), once a process has started.

    A full collection walks every tracked object: a shard holds ~100,000 after its imports (functions, types,
    dataclass fields), and walking them takes 80-200 ms on a small machine, a pause of the whole event loop several
    times a minute under load (seen as commit and produce p99). Those objects live as long as the process; frozen,
    they are not walked again, and a full collection covers only what was allocated since. Cycles among frozen
    objects are never freed, which is what a process-lifetime object wants anyway."""
    gc.collect()
    gc.freeze()


def quick_thread_handoff() -> None:
    """Let a worker thread back onto the GIL within 0.5 ms instead of CPython's 5 ms, in a process whose event loop
    hands blocking calls to threads (the shard's fsyncs, the controller's Raft log writes).

    A thread returning from fsync needs the GIL to report the result (``call_soon_threadsafe``) and to take its next
    job. While the loop thread runs Python code, the returning thread waits a whole switch interval before the loop
    thread is asked to drop the GIL, and the loop then waits for it back: up to 5 ms added to every fsync that ends
    during a busy turn, on the path of every acks=all produce and offset commit. Measured with the
    ``consumer-groups`` workload at 10,000 msg/s (producer linger.ms 50): offset commits acknowledged by the broker
    within 25 ms went from 90% to 95%, and the clients' commit p99 from 309 to 137 ms. The switch is only requested
    when a thread waits, so an idle process pays nothing."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)


async def within(aw: Awaitable[T], timeout_s: float) -> T:
    """``await aw``, bounded by ``timeout_s`` (TimeoutError past it; ``aw`` is then cancelled), that never swallows
    a cancellation of the waiting task. Use it instead of ``asyncio.wait_for``: in Python 3.11, when ``aw`` finishes in
    the same loop step as the waiting task is cancelled, wait_for returns the result and the cancellation is lost
    (gh-86296); a loop around it then runs on, and a process whose loop cancels its tasks on the way out cannot
    exit (the controller hung that way in ``_cancel_all_tasks``: a waiter for metadata propagation that looped until
    its deadline)."""
    async with asyncio.timeout(max(0.0, timeout_s)):
        return await aw


async def close_quietly(writer: asyncio.StreamWriter, timeout_s: float = 1.0) -> None:
    """Close a stream whose peer reset it and retrieve that error. The reset is also set on the stream protocol's
    close future, which asyncio logs as "Future exception was never retrieved" (at ERROR) unless someone retrieves
    it: StreamReaderProtocol.__del__ does, but only if the garbage collector happens to run it before the future's
    own finalizer. A node stopping on SIGTERM logged it that way once in ~1000 stops."""
    writer.close()
    with contextlib.suppress(ConnectionError, OSError, TimeoutError):
        await within(writer.wait_closed(), timeout_s)


def stop_on_sigterm(loop: asyncio.AbstractEventLoop, request_stop: Callable[[], None]) -> None:
    """Call ``request_stop`` on the first SIGTERM and ignore every later one, for the rest of the process's life.

    A second SIGTERM is common: the whole process group gets one (systemd's KillMode=control-group, ``kill -TERM
    -<pgid>``), then the supervisor sends its own to each child. Left to the loop, it could arrive after the loop
    closed, when closing put the default action back, and kill a process that had stopped cleanly."""

    def first() -> None:
        loop.remove_signal_handler(signal.SIGTERM)  # the loop no longer owns it: closing will not reset it
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        request_stop()

    loop.add_signal_handler(signal.SIGTERM, first)


def describe_tasks() -> str:
    """Every task of the running loop and, innermost last, the coroutines it awaits through (file:line function)."""
    lines = [f"asyncio tasks of process {os.getpid()}:"]
    for task in sorted(asyncio.all_tasks(), key=lambda t: t.get_name()):
        lines.append(f"  task {task.get_name()}:")
        awaited: Any = task.get_coro()
        for _ in range(AWAIT_CHAIN_MAX):
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
            if frame is None:
                if awaited is not None:
                    lines.append(f"    awaiting {awaited!r:.200}")
                break
            lines.append(f"    {frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return "\n".join(lines) + "\n"


async def parent_gone(parent_pid: int) -> None:
    """Return once this process's parent is no longer ``parent_pid`` (it died and the process was re-parented):
    belt and braces with the end of file a child sees on its link to the supervisor."""
    while os.getppid() == parent_pid:
        await asyncio.sleep(PARENT_CHECK_INTERVAL_S)
