"""What every process of a node does the same way with its event loop: run it, and notice its parent dying."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any

PARENT_CHECK_INTERVAL_S = 1.0


def run(main: Coroutine[Any, Any, int]) -> int:
    """Run ``main`` to completion on uvloop (a dependency), or on plain asyncio where uvloop cannot be imported."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return int(uvloop.run(main))


async def parent_gone(parent_pid: int) -> None:
    """Return once this process's parent is no longer ``parent_pid`` (it died and the process was re-parented):
    belt and braces with the end of file a child sees on its link to the supervisor."""
    while os.getppid() == parent_pid:
        await asyncio.sleep(PARENT_CHECK_INTERVAL_S)
