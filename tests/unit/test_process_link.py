"""The supervisor's links to its children, and a shard's controller link across a restart of the controller process."""

from __future__ import annotations

import asyncio
import socket

import pytest

from controller.commands import NoOp, encode_command
from controller.image import MetadataImage, encode_image
from controller.state_machine import CommandRejected, RejectKind
from controller.wire import Problem
from rafka_shards.ipc.channel import (
    Applied,
    ChannelDecoder,
    Message,
    Propose,
    Ready,
    Stats,
    encode_hello,
    encode_records,
)
from rafka_shards.ipc.process_link import (
    MESSAGE_BYTES_MAX,
    ChannelClosed,
    ControllerReady,
    Link,
    LinkError,
    LinkMessage,
    NodeState,
    ShardChannel,
    ShardReady,
    ShardState,
    decode,
    encode,
    socket_pair,
)
from rafka_shards.shard.controller_link import ControllerLink

MESSAGES: list[LinkMessage] = [
    ShardChannel(1, 4242),
    ShardState(0, 10, "127.0.0.1:9092", 4243, True, 2, "killed by SIGKILL"),
    ShardState(1, 11, "[::1]:9093", 0, False, 0, None),
    NodeState(True, False),
    ControllerReady(77),
    ShardReady(1, 4242),
    ChannelClosed(0, 4243),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_link_messages_round_trip(msg: LinkMessage) -> None:
    assert decode(encode(msg)) == msg


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[1, 2]",
        b'{"type": "Nope"}',
        b'{"index": 1, "pid": 2}',
        b'{"type": "ShardReady", "index": 1}',
        b'{"type": "ShardReady", "index": 1, "pid": 2, "extra": 3}',
        b'{"type": "ShardReady", "index": "1", "pid": 2}',
        b'{"type": "ShardReady", "index": true, "pid": 2}',
        b'{"type": "NodeState", "started": 1, "stopping": false}',
        b'{"type": "ShardState", "index": 0, "broker_id": 0, "listen": null, "pid": 0, "alive": true, "restarts": 0, '
        b'"last_exit": null}',
        b'{"type": "ShardReady", "index": 1, "pid": 2, "pad": "' + b"x" * MESSAGE_BYTES_MAX + b'"}',
    ],
)
def test_link_refuses_malformed_messages(data: bytes) -> None:
    with pytest.raises(LinkError):
        decode(data)


@pytest.mark.parametrize(
    ("data", "problem", "path"),
    [
        (b'{"type": "ShardReady", "index": 1, "pid": 2}', Problem.VERSION, ""),
        (b'{"type": "ShardReady", "v": 2, "index": 1, "pid": 2}', Problem.VERSION, ""),
        (b'{"type": "ShardReady", "v": 1, "index": 1}', Problem.MISSING_FIELDS, ""),
        (b'{"type": "ShardReady", "v": 1, "index": 1, "pid": 2, "extra": 3}', Problem.EXTRA_FIELDS, ""),
        (b'{"type": "ShardReady", "v": 1, "index": "1", "pid": 2}', Problem.WRONG_TYPE, "index"),
        (b'{"type": "ShardReady", "v": 1, "index": true, "pid": 2}', Problem.WRONG_TYPE, "index"),
        (b'{"type": "NodeState", "v": 1, "started": 1, "stopping": false}', Problem.WRONG_TYPE, "started"),
        (
            b'{"type": "ShardState", "v": 1, "index": 0, "broker_id": 0, "listen": null, "pid": 0, "alive": true, '
            b'"restarts": 0, "last_exit": null}',
            Problem.WRONG_TYPE,
            "listen",
        ),
    ],
)
def test_link_refusals_name_the_problem(data: bytes, problem: Problem, path: str) -> None:
    with pytest.raises(LinkError) as info:
        decode(data)
    assert (info.value.problem, info.value.path) == (problem, path)


def test_a_socket_travels_with_its_message_and_garbage_closes_the_link() -> None:
    async def main() -> None:
        a, b = socket_pair()
        got: list[tuple[LinkMessage, socket.socket | None]] = []
        closed: list[str] = []
        sender = Link(a, lambda m, s: None, lambda r: None)
        receiver = Link(b, lambda m, s: got.append((m, s)), closed.append)
        sender.start()
        receiver.start()
        mine, theirs = socket.socketpair()
        sender.send(ShardChannel(3, 99), theirs)
        sender.send(ShardReady(3, 99))
        for _ in range(100):
            if len(got) == 2:
                break
            await asyncio.sleep(0.01)
        assert [m for m, _ in got] == [ShardChannel(3, 99), ShardReady(3, 99)]
        passed = got[0][1]
        assert passed is not None and got[1][1] is None
        assert theirs.fileno() == -1  # the link closed the sender's copy once it was sent
        passed.sendall(b"through the passed socket")
        assert mine.recv(100) == b"through the passed socket"
        passed.close()
        mine.close()

        sender.send(ShardChannel(4, 100))  # a channel message without its socket
        for _ in range(100):
            if closed:
                break
            await asyncio.sleep(0.01)
        assert closed and "without a socket" in closed[0]
        assert receiver.closed
        sender.close()

    asyncio.run(main())


def test_the_peer_going_away_closes_the_link() -> None:
    async def main() -> None:
        a, b = socket_pair()
        closed: list[str] = []
        link = Link(b, lambda m, s: None, closed.append)
        link.start()
        a.close()
        for _ in range(100):
            if closed:
                break
            await asyncio.sleep(0.01)
        assert closed == ["the peer closed the link"]

    asyncio.run(main())


# ---- a shard's controller link across controller processes ------------------------------------------------------

NOOP = encode_command(NoOp())
EMPTY = encode_image(MetadataImage(offset=0, cluster_id="c"))


def _no_stats(request_id: int) -> Stats:
    raise AssertionError("no stats were asked for")


async def _read_messages(sock: socket.socket, decoder: ChannelDecoder, count: int) -> list[Message]:
    loop = asyncio.get_running_loop()
    out: list[Message] = []
    while len(out) < count:
        data = await asyncio.wait_for(loop.sock_recv(sock, 65536), 5)
        assert data, "the shard closed the channel"
        out.extend(decoder.feed(data))
    return out


def test_a_shard_keeps_its_image_across_a_controller_restart_and_catches_up_from_the_new_one() -> None:
    async def main() -> None:
        images: list[int] = []
        lost: list[BaseException] = []
        link = ControllerLink(lambda img: images.append(img.offset), _no_stats, lost.append)

        # The first controller process: snapshot at 0, records 1..2.
        ctl, shard_end = socket.socketpair()
        ctl.setblocking(False)
        await link.attach(shard_end)
        ctl.sendall(encode_hello(2, EMPTY) + encode_records(1, [NOOP, NOOP]))
        image = await asyncio.wait_for(link.connect(), 5)
        assert image.offset == 2 and images == [0, 2]
        link.ready(7, 9092)
        decoder = ChannelDecoder()
        assert await _read_messages(ctl, decoder, 3) == [Applied(0), Applied(2), Ready(7, 9092)]

        # A proposal in flight when the controller process dies fails with "controller unavailable" (Kafka's
        # NOT_CONTROLLER, which clients retry); so does one made while there is no controller. The shard stays up.
        pending = asyncio.ensure_future(link.propose(NoOp()))
        assert isinstance((await _read_messages(ctl, decoder, 1))[0], Propose)
        ctl.close()
        with pytest.raises(CommandRejected) as e:
            await asyncio.wait_for(pending, 5)
        assert e.value.rejection.kind is RejectKind.CONTROLLER_UNAVAILABLE
        with pytest.raises(CommandRejected) as e:
            await link.propose(NoOp())
        assert e.value.rejection.kind is RejectKind.CONTROLLER_UNAVAILABLE
        assert not link.connected and lost == []
        assert link.image.offset == 2

        # The restarted controller process starts from its snapshot (0) and sends the whole committed log, which
        # has grown to 4: the shard skips what it applied, applies 3..4, and never reports past what was sent.
        ctl2, shard_end2 = socket.socketpair()
        ctl2.setblocking(False)
        await link.attach(shard_end2)
        decoder2 = ChannelDecoder()
        ctl2.sendall(encode_hello(4, EMPTY) + encode_records(1, [NOOP, NOOP]))
        assert await _read_messages(ctl2, decoder2, 3) == [Applied(2), Ready(7, 9092), Applied(2)]
        assert link.image.offset == 2 and images == [0, 2]  # nothing rebuilt from the older snapshot
        ctl2.sendall(encode_records(3, [NOOP, NOOP]))
        assert await _read_messages(ctl2, decoder2, 1) == [Applied(4)]
        assert link.image.offset == 4 and images == [0, 2, 4] and link.connected

        # A third one whose snapshot is exactly where the shard is, with no record after it: the shard still says
        # where it is, or the controller would count it behind and hold every proposal for it.
        ctl3, shard_end3 = socket.socketpair()
        ctl3.setblocking(False)
        await link.attach(shard_end3)
        ctl3.sendall(encode_hello(4, encode_image(link.image)))
        assert await _read_messages(ctl3, ChannelDecoder(), 2) == [Applied(4), Ready(7, 9092)]
        assert images == [0, 2, 4]
        ctl2.close()
        ctl2 = ctl3

        # A channel carrying garbage is a real fault: the shard is told (and stops, to be restarted).
        ctl2.sendall(b"\x00\x00\x00\x05garbage")
        for _ in range(100):
            if lost:
                break
            await asyncio.sleep(0.01)
        assert lost
        await link.close()
        ctl2.close()

    asyncio.run(main())
