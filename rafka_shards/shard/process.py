"""The entry point of a shard process: what the supervisor's ``spawn`` runs.

Runs in a fresh interpreter (multiprocessing's ``spawn`` start method: nothing is inherited but the arguments and the
two sockets the supervisor made, so no thread or event loop state crosses a fork). Exit codes, read by the
supervisor: 0 after a clean stop (SIGTERM from the supervisor, or the supervisor went away), 1 on a fatal error,
2 when the shard could not start.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys

from rafka_shards import event_loop
from rafka_shards.config import BrokerConfig


def run_shard(
    config: BrokerConfig,
    index: int,
    listener: socket.socket,
    supervisor_link: socket.socket,
    parent_pid: int,
    extra_listeners: tuple[socket.socket, ...] = (),
) -> None:
    logging.basicConfig(
        level=config.log_level.upper(),
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s shard-{index} %(name)s: %(message)s",
    )
    event_loop.name_process(f"node {config.node_id} shard {index} (broker {config.broker_id}) {config.listen_endpoint}")
    sys.exit(event_loop.run(_serve(config, listener, supervisor_link, parent_pid, extra_listeners)))


async def _serve(
    config: BrokerConfig,
    listener: socket.socket,
    supervisor_link: socket.socket,
    parent_pid: int,
    extra_listeners: tuple[socket.socket, ...],
) -> int:
    from rafka_shards.shard.shard import Shard, StartupError

    log = logging.getLogger("rafka_shards.shard")
    shard = Shard(config, listener, supervisor_link, parent_pid, extra_listeners=extra_listeners)
    loop = asyncio.get_running_loop()
    event_loop.stop_on_sigterm(loop, shard.request_stop)
    # Ctrl-C in a terminal sends SIGINT to the whole process group: the supervisor handles it and stops the shards
    # in order (SIGTERM). A shard stopping on its own meanwhile would look like a death to restart.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        await shard.start()
    except StartupError as e:
        log.error("%s", e)
        await shard.stop()
        return 2
    fatal = await shard.wait_stopped()
    await shard.stop()
    return 1 if fatal is not None else 0
