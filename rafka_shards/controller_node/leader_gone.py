"""Notice a dead controller leader without waiting out the election timeout.

Runs in the controller process. When the leader's connection to this node closes, its controller port is checked a
few times (``LEADER_GONE_CHECKS_S`` after the close): if it refuses connections, its process is gone, and this node
campaigns at once (``RaftNode.leader_gone``). A leader that merely reconnects still listens; a paused or cut-off one
does not refuse: both are left to the election timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from controller.raft.node import RaftNode, Role
from controller.raft.types import NodeId
from rafka_shards import event_loop
from rafka_shards.config import Endpoint

log = logging.getLogger(__name__)

# When the leader's connection closes, its port is checked this long after, then after these further delays.
LEADER_GONE_CHECKS_S = (0.01, 0.05, 0.25)


class LeaderGoneCheck:
    def __init__(
        self, node: RaftNode, addresses: dict[int, Endpoint], timeout_ms: int, wake: Callable[[], None]
    ) -> None:
        self._node = node
        self._addresses = addresses
        self._timeout_s = timeout_ms / 1000
        self._wake = wake
        self._checking: set[int] = set()  # peers whose closed connection is being checked
        self._tasks: set[asyncio.Task[None]] = set()

    def peer_closed(self, src: int) -> None:
        """Peer ``src``'s connection to this node closed: if it is the leader, check whether its process is gone."""
        node = self._node
        if src != node.leader or node.role == Role.LEADER or src in self._checking:
            return
        address = self._addresses.get(src)
        if address is None:
            return
        self._checking.add(src)
        task = asyncio.get_running_loop().create_task(self._check(src, address))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _check(self, src: int, address: Endpoint) -> None:
        # A dying process may close its connections a moment before its listener: look a few times.
        try:
            for delay_s in LEADER_GONE_CHECKS_S:
                await asyncio.sleep(delay_s)
                try:
                    connecting = asyncio.open_connection(address.host, address.port)
                    _, writer = await event_loop.within(connecting, self._timeout_s)
                    writer.transport.abort()  # it listens (for now)
                except ConnectionRefusedError:
                    if self._node.leader == src:
                        log.warning("controller leader %d is gone (its port refuses connections): electing", src)
                        self._node.leader_gone(NodeId(src))
                        self._wake()
                    return
                except (TimeoutError, OSError):
                    return  # not proof of death
        finally:
            self._checking.discard(src)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
