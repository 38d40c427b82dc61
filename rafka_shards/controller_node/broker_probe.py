"""The asyncio shell of the active controller's liveness probes (``controller.liveness`` decides what they mean).

Runs in the controller process, only while its controller leads the Raft quorum (``duties.DutiesRunner`` starts one
task per registered, unfenced broker and cancels them when it stops leading or the broker is fenced). Each task keeps
one Kafka connection to the broker's listener and sends ApiVersions v0 every ``interval_ms``, reporting every outcome:
answered, closed (EOF/reset: reconnect at once), refused (ECONNREFUSED) or timed out (after ``timeout_ms``; retried
after the interval). Bounded: one connection and one request in flight per broker, responses of at most
``RESPONSE_BYTES_MAX``.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

from controller.liveness import ProbeOutcome, ProbeTarget

RESPONSE_BYTES_MAX = 64 * 1024
RECONNECT_AFTER_CLOSE_S = 0.01  # a listener that accepts and closes at once costs at most 100 connections/s
_API_VERSIONS_KEY = 18
_CLIENT_ID = b"rafka-controller-probe"


def _request(correlation: int) -> bytes:
    header = struct.pack(">hhih", _API_VERSIONS_KEY, 0, correlation, len(_CLIENT_ID)) + _CLIENT_ID
    return struct.pack(">i", len(header)) + header


async def probe_broker(
    target: ProbeTarget, interval_ms: int, timeout_ms: int, report: Callable[[ProbeTarget, ProbeOutcome], None]
) -> None:
    """Probe ``target`` until cancelled."""
    interval_s, timeout_s = interval_ms / 1000, timeout_ms / 1000
    correlation = 0
    closed_before = False  # the previous connection was closed too (a dead shard's port resets every connection)
    while True:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(target.host, target.port), timeout_s)
        except ConnectionRefusedError:
            report(target, ProbeOutcome.REFUSED)
            await asyncio.sleep(interval_s)
            continue
        except (TimeoutError, OSError):
            report(target, ProbeOutcome.TIMED_OUT)  # unreachable for another reason: not proof of death
            await asyncio.sleep(interval_s)
            continue
        try:
            while True:
                correlation = (correlation + 1) % 2**31
                writer.write(_request(correlation))
                await writer.drain()
                (size,) = struct.unpack(">i", await asyncio.wait_for(reader.readexactly(4), timeout_s))
                if not 4 <= size <= RESPONSE_BYTES_MAX:
                    raise ConnectionResetError(f"response of {size} bytes")
                await asyncio.wait_for(reader.readexactly(size), timeout_s)
                report(target, ProbeOutcome.ANSWERED)
                closed_before = False
                await asyncio.sleep(interval_s)
        except TimeoutError:
            report(target, ProbeOutcome.TIMED_OUT)
            await asyncio.sleep(interval_s)
        except (asyncio.IncompleteReadError, OSError):
            report(target, ProbeOutcome.CLOSED)
            # Reconnect almost at once (a refusal means the node is gone); after a second close in a row (the
            # supervisor resets a dead shard's connections until it is back) at the usual interval.
            await asyncio.sleep(interval_s if closed_before else RECONNECT_AFTER_CLOSE_S)
            closed_before = True
        finally:
            writer.transport.abort()  # never wait to flush to a peer that may be paused
