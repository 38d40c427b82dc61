"""The active controller's liveness probes (controller/liveness.py): only a refused connection fences, at once;
timeouts and closed connections never do. And the probe shell against real loopback sockets."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import pytest

from controller.commands import Command, FenceBroker, RegisterBroker
from controller.image import MetadataImage
from controller.liveness import BrokerProbes, ProbeOutcome, ProbeTarget
from controller.state_machine import apply
from rafka_shards.config import SecurityProtocol
from rafka_shards.controller_node.broker_probe import probe_broker
from rafka_shards.security.client_security import ClientSecurity, ClientTls
from rafka_shards.security.tls import TlsSettings, client_context, server_context
from tests.certs import make_pki


def _image(*commands: Command) -> MetadataImage:
    image = MetadataImage(offset=0, cluster_id="c")
    for cmd in commands:
        image = apply(image, cmd, image.offset + 1)
    return image


REGISTERED = _image(*(RegisterBroker(b, "127.0.0.1", 9092 + b, None, f"inc-{b}") for b in range(3)))


def test_every_unfenced_broker_is_probed() -> None:
    probes = BrokerProbes()
    image = apply(REGISTERED, FenceBroker(1, "inc-1"), REGISTERED.offset + 1)
    assert [t.broker_id for t in probes.targets(image)] == [0, 2]
    assert probes.targets(image)[1] == ProbeTarget(2, "inc-2", "127.0.0.1", 9094)


def test_timeouts_and_closed_connections_never_fence() -> None:
    probes = BrokerProbes()
    target = probes.targets(REGISTERED)[0]
    for now_ms, outcome in enumerate([ProbeOutcome.TIMED_OUT, ProbeOutcome.CLOSED, ProbeOutcome.ANSWERED] * 100):
        assert probes.observe(REGISTERED, target, outcome, now_ms * 1000) is None
    assert probes.last(target) == (ProbeOutcome.ANSWERED, 299_000)


def test_a_refused_connection_fences_the_probed_incarnation_once_until_done() -> None:
    probes = BrokerProbes()
    target = probes.targets(REGISTERED)[2]
    fence = probes.observe(REGISTERED, target, ProbeOutcome.REFUSED, 0)
    assert fence == FenceBroker(2, "inc-2")
    assert probes.observe(REGISTERED, target, ProbeOutcome.REFUSED, 10) is None  # in flight
    probes.done(2)
    assert probes.observe(REGISTERED, target, ProbeOutcome.REFUSED, 20) == FenceBroker(2, "inc-2")


def test_a_refusal_seen_for_an_old_incarnation_or_a_fenced_broker_fences_nothing() -> None:
    probes = BrokerProbes()
    target = probes.targets(REGISTERED)[0]
    again = apply(REGISTERED, RegisterBroker(0, "127.0.0.1", 9092, None, "inc-0b"), REGISTERED.offset + 1)
    assert probes.observe(again, target, ProbeOutcome.REFUSED, 0) is None
    fenced = apply(REGISTERED, FenceBroker(0, "inc-0"), REGISTERED.offset + 1)
    assert probes.observe(fenced, target, ProbeOutcome.REFUSED, 0) is None


def _listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    return sock


async def _probe_until(target: ProbeTarget, wanted: ProbeOutcome, seen: list[ProbeOutcome]) -> None:
    done = asyncio.Event()

    def report(_t: ProbeTarget, outcome: ProbeOutcome) -> None:
        seen.append(outcome)
        if outcome is wanted:
            done.set()

    task = asyncio.get_running_loop().create_task(probe_broker(target, 20, 200, report))
    try:
        await asyncio.wait_for(done.wait(), 10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_the_probe_shell_reports_closed_then_refused_when_the_listener_goes_away() -> None:
    async def run() -> list[ProbeOutcome]:
        listener = _listener()
        port = listener.getsockname()[1]
        target = ProbeTarget(0, "i", "127.0.0.1", port)
        seen: list[ProbeOutcome] = []
        loop = asyncio.get_running_loop()

        async def serve_once_then_die() -> None:
            conn, _ = await loop.sock_accept(listener)
            request = await loop.sock_recv(conn, 1024)
            assert request[4:8] == bytes([0, 18, 0, 0])  # ApiVersions v0
            await loop.sock_sendall(conn, (4).to_bytes(4, "big") + request[8:12])
            await loop.sock_recv(conn, 1024)  # the second probe
            listener.close()  # the whole node dies: listener and connection close at once
            conn.close()

        server = loop.create_task(serve_once_then_die())
        await _probe_until(target, ProbeOutcome.REFUSED, seen)
        await server
        return seen

    seen = asyncio.run(run())
    assert seen[0] is ProbeOutcome.ANSWERED
    assert ProbeOutcome.REFUSED in seen and ProbeOutcome.TIMED_OUT not in seen


def test_the_probe_shell_reports_a_timeout_when_a_listener_never_answers() -> None:
    async def run() -> list[ProbeOutcome]:
        listener = _listener()  # accepts into the backlog, never answers: a paused broker, or a dead shard's slot
        target = ProbeTarget(0, "i", "127.0.0.1", listener.getsockname()[1])
        seen: list[ProbeOutcome] = []
        try:
            await _probe_until(target, ProbeOutcome.TIMED_OUT, seen)
        finally:
            listener.close()
        return seen

    assert asyncio.run(run()) == [ProbeOutcome.TIMED_OUT]


def test_a_refused_certificate_is_no_proof_of_death_and_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A TLS listener whose certificate the probe's CA did not sign: reported as timed out (the session decides),
    never refused, and logged once while it lasts, not at every probe."""
    pki = make_pki(tmp_path)
    server = server_context(TlsSettings(cert_file=pki.server.cert_file, key_file=pki.server.key_file))
    foreign = ClientSecurity(SecurityProtocol.SSL, ClientTls.fixed(client_context(pki.other_ca.cert_file)))

    async def run() -> list[ProbeOutcome]:
        srv = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0, ssl=server)
        target = ProbeTarget(0, "i", "127.0.0.1", srv.sockets[0].getsockname()[1])
        seen: list[ProbeOutcome] = []

        def report(_t: ProbeTarget, outcome: ProbeOutcome) -> None:
            seen.append(outcome)

        task = asyncio.get_running_loop().create_task(probe_broker(target, 20, 2000, report, foreign))
        try:
            for _ in range(500):  # bounded: a few probes are enough
                if len(seen) >= 3:
                    break
                await asyncio.sleep(0.01)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            srv.close()
        return seen

    with caplog.at_level(logging.WARNING, logger="rafka_shards.controller_node.broker_probe"):
        seen = asyncio.run(run())
    assert len(seen) >= 3 and set(seen) == {ProbeOutcome.TIMED_OUT}
    warnings = [r.getMessage() for r in caplog.records if "certificate verify failed" in r.getMessage()]
    assert len(warnings) == 1, warnings
