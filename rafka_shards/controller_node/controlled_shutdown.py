"""Controlled shutdown and the return from it, in the controller process (the asyncio shell of
``controller.controlled_shutdown``).

When the node stops (SIGTERM to the supervisor), the supervisor asks this process (``ControlledShutdown`` on its link)
before it stops any shard: ``drain`` puts the node's usable brokers in maintenance, which moves the leadership of
every partition another usable in-sync replica can lead, waits until the node's own shards have applied that (so
they answer NOT_LEADER_OR_FOLLOWER from then on), then hands the Raft leadership to another voter if this node has
it. Everything is bounded by one deadline (``controlled_shutdown_timeout_ms``): past it the node stops anyway, as
before. The brokers it put in maintenance are written first to ``data_dir/controlled-shutdown.json``; once the node
is back and ready, ``restore`` ends their maintenance (not an operator's) and removes the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Collection
from pathlib import Path

from controller.commands import SetBrokerMaintenance
from controller.controlled_shutdown import (
    brokers_to_restore,
    decode_marker,
    encode_marker,
    leaders_to_move,
    plan_drain,
    transfer_target,
)
from controller.raft.types import NO_NODE, NodeId
from controller.state_machine import CommandRejected
from rafka_shards import event_loop
from rafka_shards.controller_node.errors import ControllerUnavailable
from rafka_shards.controller_node.raft_controller import RaftController

log = logging.getLogger(__name__)

MARKER_NAME = "controlled-shutdown.json"
POLL_S = 0.05  # how often a wait looks at the image and the Raft status again
PROPOSE_TIMEOUT_S = 5.0  # one proposal attempt; a failed one is retried until the deadline
TRANSFER_ATTEMPTS_MAX = 2  # each lasts an election timeout
RESTORE_ATTEMPTS_MAX = 120  # restore retries a second apart (the quorum may still be electing) before giving up


def marker_path(data_dir: Path) -> Path:
    return data_dir / MARKER_NAME


async def drain(
    controller: RaftController,
    data_dir: Path,
    local: Collection[int],
    applied_by_shards: Callable[[], int],
    timeout_s: float,
) -> str:
    """Move partition and Raft leadership away from this node within ``timeout_s``; what was done, for the log.
    ``applied_by_shards``: the lowest metadata offset the node's live shards applied."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    plan = plan_drain(controller.image, local)
    done: list[str] = []
    if plan.brokers:
        _write_marker(data_dir, plan.brokers)
        for broker_id in plan.brokers:
            if not await _set_maintenance(controller, broker_id, True, deadline):
                return f"gave up: broker {broker_id} not in maintenance after {timeout_s:.1f}s"
        target_offset = controller.applied_offset
        while leaders_to_move(controller.image, local) > 0 or applied_by_shards() < target_offset:
            if loop.time() >= deadline:
                return (
                    f"gave up after {timeout_s:.1f}s: {leaders_to_move(controller.image, local)} partition(s) still "
                    f"led here, shards applied {applied_by_shards()} of {target_offset}"
                )
            await asyncio.sleep(POLL_S)
        done.append(f"brokers {list(plan.brokers)} in maintenance, their leadership moved")
    else:
        done.append(f"no drain ({plan.skipped})")
    target = transfer_target(controller.status())
    if target is not None:
        if not await _transfer_raft(controller, target, deadline):
            return "; ".join([*done, f"Raft leadership not transferred to node {target} in time"])
        done.append(f"Raft leadership transferred to node {controller.status().leader}")
    return "; ".join(done)


async def _set_maintenance(controller: RaftController, broker_id: int, enabled: bool, deadline: float) -> bool:
    """Propose until the applied image shows the broker's maintenance as ``enabled``; False at the deadline."""
    loop = asyncio.get_running_loop()
    while True:
        reg = controller.image.brokers.get(broker_id)
        if reg is None or reg.maintenance == enabled:
            return reg is not None
        remaining = deadline - loop.time()
        if remaining <= 0:
            return False
        try:
            await event_loop.within(
                controller.propose_own(SetBrokerMaintenance(broker_id, enabled)), min(remaining, PROPOSE_TIMEOUT_S)
            )
        except (CommandRejected, ControllerUnavailable, TimeoutError) as e:
            # No leader yet, leadership moving, or a concurrent change: look at the image again and retry.
            log.info("maintenance %s for broker %d: %s; retrying", "on" if enabled else "off", broker_id, e)
            await asyncio.sleep(min(POLL_S * 4, max(0.0, deadline - loop.time())))


async def _transfer_raft(controller: RaftController, target: NodeId, deadline: float) -> bool:
    """Hand Raft leadership to ``target``; True once another node leads. The node's transfer lapses after an
    election timeout; it is tried ``TRANSFER_ATTEMPTS_MAX`` times (to the best voter then), not until the deadline:
    a voter that is down (the last node of a cluster stopping) cannot take it, and the node should not wait for it."""
    loop = asyncio.get_running_loop()
    me = controller.status().node
    for _ in range(TRANSFER_ATTEMPTS_MAX):
        status = controller.status()
        if status.leader not in (me, NO_NODE):
            return True
        next_target = transfer_target(status) or target
        with contextlib.suppress(ControllerUnavailable):
            controller.transfer_leadership(next_target)
        attempt_end = min(deadline, loop.time() + controller.config.raft_election_timeout_ms / 1000)
        while loop.time() < attempt_end:
            if controller.status().leader not in (me, NO_NODE):
                return True
            await asyncio.sleep(POLL_S)
    return controller.status().leader not in (me, NO_NODE)


async def restore(controller: RaftController, data_dir: Path) -> None:
    """After a controlled shutdown, once the node is ready again: end the maintenance it started, then remove the
    marker. Retried a second apart (bounded) while the quorum cannot take the proposal."""
    path = marker_path(data_dir)
    try:
        marked = decode_marker(path.read_bytes())
    except FileNotFoundError:
        return
    except ValueError as e:
        log.error("ignoring %s: %s", path, e)
        path.unlink(missing_ok=True)
        return
    for _ in range(RESTORE_ATTEMPTS_MAX):
        pending = brokers_to_restore(controller.image, marked)
        if not pending:
            path.unlink(missing_ok=True)
            log.info("back from a controlled shutdown: brokers %s out of maintenance", list(marked))
            return
        loop = asyncio.get_running_loop()
        for broker_id in pending:
            await _set_maintenance(controller, broker_id, False, loop.time() + PROPOSE_TIMEOUT_S)
        if brokers_to_restore(controller.image, marked):
            await asyncio.sleep(1.0)
    log.error(
        "brokers %s are still in maintenance after a controlled shutdown; end it with DELETE "
        "/v1/brokers/{id}/maintenance (the node tries again at its next start)",
        list(brokers_to_restore(controller.image, marked)),
    )


def _write_marker(data_dir: Path, brokers: Collection[int]) -> None:
    """Durably, before the first proposal: a crash between them must not leave maintenance nobody ends. Brokers of
    an earlier marker stay listed (a shutdown that did not finish its restore)."""
    path = marker_path(data_dir)
    with contextlib.suppress(FileNotFoundError, ValueError):
        brokers = {*brokers, *decode_marker(path.read_bytes())}
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(encode_marker(brokers))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
