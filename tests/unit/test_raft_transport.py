"""The controller's peer transport on real loopback sockets under uvloop (what ``serve`` runs): a peer that dies and
comes back on the same port gets frames again, however its old connection ended."""

from __future__ import annotations

import asyncio
import socket
import struct

import uvloop

from rafka_shards.config import Endpoint
from rafka_shards.controller_node.raft_transport import KIND_RAFT, PeerTransport
from tests.conftest import free_port_range

SECRET = b"s3cret"


def test_a_link_whose_connection_was_reset_while_idle_reconnects() -> None:
    """A peer that dies resets the connection while the link waits for work; uvloop then closes the transport, and
    its next write raises RuntimeError rather than failing quietly. The link must reconnect (it
    used to die, and the leader never reached a restarted follower again)."""

    async def run() -> None:
        port = free_port_range(1)
        sender = PeerTransport(1, SECRET, {2: Endpoint("127.0.0.1", port)}, lambda _k, _s, _b: None)

        async def dies_with_frames_unread(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await asyncio.sleep(0.1)
            sock = w.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
            w.transport.abort()

        doomed = await asyncio.start_server(dies_with_frames_unread, "127.0.0.1", port)
        for _ in range(3):
            sender.send(2, KIND_RAFT, b"unread")
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)  # the reset arrives while the link is idle
        doomed.close()
        await doomed.wait_closed()
        received: list[bytes] = []
        peer = PeerTransport(2, SECRET, {1: Endpoint("127.0.0.1", 1)}, lambda _k, _s, body: received.append(body))
        await peer.start(Endpoint("127.0.0.1", port))
        for _ in range(300):  # heartbeats, until one arrives
            for _ in range(3):
                sender.send(2, KIND_RAFT, b"after")
            await asyncio.sleep(0.01)
            if b"after" in received:
                break
        links = sender.links()
        assert b"after" in received and links["2"]["state"] != "dead", links
        await peer.close()
        await sender.close()

    uvloop.run(run())


def test_the_first_frame_after_a_peer_restarted_reaches_its_new_incarnation() -> None:
    """Two followers exchange nothing until an election: the link to a peer that restarted meanwhile must notice the
    old connection closed while idle and reconnect, so the one vote request sent later is not written into a dead
    connection and lost (which cost a whole election timeout in fail-over)."""

    async def run() -> None:
        port = free_port_range(1)
        sender = PeerTransport(1, SECRET, {2: Endpoint("127.0.0.1", port)}, lambda _k, _s, _b: None)
        first: list[bytes] = []
        old = PeerTransport(2, SECRET, {1: Endpoint("127.0.0.1", 1)}, lambda _k, _s, body: first.append(body))
        await old.start(Endpoint("127.0.0.1", port))
        sender.send(2, KIND_RAFT, b"hello")
        for _ in range(500):
            if first:
                break
            await asyncio.sleep(0.01)
        assert first == [b"hello"]
        await old.close()  # the peer's process ends: its connections close
        received: list[bytes] = []
        new = PeerTransport(2, SECRET, {1: Endpoint("127.0.0.1", 1)}, lambda _k, _s, body: received.append(body))
        await new.start(Endpoint("127.0.0.1", port))
        for _ in range(500):  # until the link has reconnected to the new incarnation on its own
            if sender.links()["2"]["connects"] == 2 and sender.links()["2"]["state"] == "idle":
                break
            await asyncio.sleep(0.01)
        sender.send(2, KIND_RAFT, b"vote for me")  # once, as a candidate asks each peer once per election
        for _ in range(500):
            if received:
                break
            await asyncio.sleep(0.01)
        assert received == [b"vote for me"], sender.links()
        await new.close()
        await sender.close()

    uvloop.run(run())
