"""The asyncio shell of the active controller's liveness probes (``controller.liveness`` decides what they mean).

Runs in the controller process, only while its controller leads the Raft quorum (``duties.DutiesRunner`` starts one
task per registered, unfenced broker and cancels them when it stops leading or the broker is fenced). Each task keeps
one Kafka connection (``rafka_shards.ipc.kafka_client``) to the broker's inter-broker listener, secured as that
listener asks (TLS, a SASL login: ``security``), and sends ApiVersions v0 every
``interval_ms``, reporting every outcome: answered (a frame with the request's correlation id; its body is not read),
closed (EOF/reset: reconnect at once), refused (ECONNREFUSED) or timed out (after ``timeout_ms``; retried after the
interval). A refused certificate or login is no proof of anything either: reported as timed out, and logged (once
per probe task until a connection is made again). Bounded: one connection and one request in flight per broker,
responses of at most ``RESPONSE_BYTES_MAX``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from kio.schema.api_versions.v0.request import ApiVersionsRequest

from controller.liveness import ProbeOutcome, ProbeTarget
from rafka_shards.ipc.kafka_client import Failure, KafkaClient, KafkaClientError
from rafka_shards.security.client_security import PLAINTEXT, ClientSecurity

log = logging.getLogger(__name__)

RESPONSE_BYTES_MAX = 64 * 1024
RECONNECT_AFTER_CLOSE_S = 0.01  # a listener that accepts and closes at once costs at most 100 connections/s
_CLIENT_ID = "rafka-controller-probe"
_API_VERSIONS = ApiVersionsRequest()  # v0: every broker answers it, whatever it speaks


async def probe_broker(
    target: ProbeTarget,
    interval_ms: int,
    timeout_ms: int,
    report: Callable[[ProbeTarget, ProbeOutcome], None],
    security: ClientSecurity = PLAINTEXT,
) -> None:
    """Probe ``target`` until cancelled."""
    interval_s, timeout_s = interval_ms / 1000, timeout_ms / 1000
    closed_before = False  # the previous connection was closed too (a dead shard's port resets every connection)
    warned = False  # a security failure was logged since the last answer
    while True:
        try:
            client = await KafkaClient.connect(
                target.host,
                target.port,
                client_id=_CLIENT_ID,
                response_bytes_max=RESPONSE_BYTES_MAX,
                timeout_s=timeout_s,
                security=security,
            )
            warned = False
        except KafkaClientError as e:
            if e.failure is Failure.SECURITY and not warned:
                log.warning("probing broker %d at %s:%d: %s", target.broker_id, target.host, target.port, e)
                warned = True
            # Only a refusal is proof of death; unreachable for another reason (or slow) is reported as a timeout.
            report(target, ProbeOutcome.REFUSED if e.failure is Failure.REFUSED else ProbeOutcome.TIMED_OUT)
            await asyncio.sleep(interval_s)
            continue
        try:
            while True:
                await client.request_answered(_API_VERSIONS, timeout_s)  # any answer will do: the body is not read
                report(target, ProbeOutcome.ANSWERED)
                closed_before = False
                await asyncio.sleep(interval_s)
        except KafkaClientError as e:
            if e.failure is Failure.TIMED_OUT:
                report(target, ProbeOutcome.TIMED_OUT)
                await asyncio.sleep(interval_s)
            else:
                report(target, ProbeOutcome.CLOSED)  # EOF, reset, or a frame too large to be an answer
                # Reconnect almost at once (a refusal means the node is gone); after a second close in a row (the
                # supervisor resets a dead shard's connections until it is back) at the usual interval.
                await asyncio.sleep(interval_s if closed_before else RECONNECT_AFTER_CLOSE_S)
                closed_before = True
        finally:
            client.abort()  # never wait to flush to a peer that may be paused
