"""controller.wire: the one typed message codec of the node's processes (round trips, and every way a message is
refused)."""

from __future__ import annotations

import contextlib
import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.commands import ChangePartition, Command, CreateTopic, NoOp, RegisterBroker, encode_command
from controller.image import MetadataImage, encode_image
from controller.wire import BYTES_MAX, Codec, Problem, Raw, WireError, rules


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclass(frozen=True, slots=True)
class Point:
    x: int
    y: int


@dataclass(frozen=True, slots=True)
class Everything:
    i: int
    s: str
    b: bool
    f: float
    data: bytes
    nothing: None
    maybe: str | None
    color: Color
    level: Level
    mode: Literal["a", "b"]
    topic_id: uuid.UUID
    ints: tuple[int, ...]
    names: list[str]
    pair: tuple[str, int]
    points: tuple[Point, ...]
    where: Point | None
    labels: dict[str, int]
    bounded: tuple[int, ...] = field(metadata=rules(max_items=3))
    status: str = field(metadata=rules(one_of=("ok", "fenced")))
    compact: tuple[Point, ...] = field(metadata=rules(positional=True))
    one: Point | None = field(metadata=rules(positional=True))


@dataclass(frozen=True, slots=True)
class Plain:
    a: int
    b: str


@dataclass(frozen=True, slots=True)
class WithCommands:
    first: int
    commands: tuple[Command, ...] = field(metadata=rules(max_items=4))
    maybe: Command | None


@dataclass(frozen=True, slots=True)
class WithImage:
    high: int
    image: MetadataImage


@dataclass(frozen=True, slots=True)
class Empty:
    pass


@dataclass(frozen=True, slots=True)
class Circle:
    radius: int
    labels: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Carrying:
    command: Command


@dataclass(frozen=True, slots=True)
class Shapes:
    """Unions of dataclasses travel tagged with their class name; a Mapping field decodes as a dict."""

    shape: Point | Circle | Carrying
    maybe: Point | Circle | None
    settings: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Node:
    child: Node | None


Msg = Everything | Plain | WithCommands | WithImage | Empty | Shapes


class ProtocolError(WireError):
    pass


CODEC: Codec[Msg] = Codec(
    "test",
    {Everything: 1, Plain: 3, WithCommands: 1, WithImage: 1, Empty: 1, Shapes: 1},
    bytes_max=4096,
    error=ProtocolError,
)

EVERYTHING = Everything(
    i=-(2**63),
    s="é\x00",
    b=False,
    f=1.5,
    data=b"\x00\xff",
    nothing=None,
    maybe=None,
    color=Color.BLUE,
    level=Level.HIGH,
    mode="b",
    topic_id=uuid.UUID(int=7),
    ints=(1, 2**63 - 1),
    names=["x"],
    pair=("p", 3),
    points=(Point(1, 2), Point(3, 4)),
    where=Point(0, 0),
    labels={"k": 1},
    bounded=(1, 2, 3),
    status="fenced",
    compact=(Point(5, 6),),
    one=Point(7, 8),
)
COMMANDS: tuple[Command, ...] = (
    RegisterBroker(1, "h", 9092, None, "inc", 0),
    CreateTopic("t", uuid.UUID(int=1), ((1, 2),), (("retention.ms", "1"),)),
    NoOp(),
)
IMAGE = MetadataImage(offset=4, cluster_id="c")


@pytest.mark.parametrize(
    "msg",
    [
        EVERYTHING,
        Plain(1, "x"),
        WithCommands(3, COMMANDS, ChangePartition("t", 0, 1, (1,), 2)),
        WithCommands(3, (), None),
        WithImage(4, IMAGE),
        Empty(),
        Shapes(Point(1, 2), None, {}),
        Shapes(Circle(3, {"a": "b"}), Point(0, 1), {"k": "v"}),
        Shapes(Carrying(COMMANDS[1]), Circle(0, {}), {}),
    ],
    ids=lambda m: type(m).__name__,
)
def test_round_trip(msg: Msg) -> None:
    data = CODEC.encode(msg)
    assert CODEC.decode(data) == msg
    assert type(CODEC.decode(data)) is type(msg)


def test_a_union_of_dataclasses_is_an_object_tagged_with_its_class_name() -> None:
    body = orjson.loads(CODEC.encode(Shapes(Circle(3, {}), Point(1, 2), {"k": "v"})))
    assert body["shape"] == {"type": "Circle", "radius": 3, "labels": {}}
    assert body["maybe"] == {"type": "Point", "x": 1, "y": 2}
    carried = orjson.loads(CODEC.encode(Shapes(Carrying(COMMANDS[0]), None, {})))["shape"]
    assert carried == {"type": "Carrying", "command": orjson.loads(encode_command(COMMANDS[0]))}


def test_the_format_is_a_json_object_with_type_and_version() -> None:
    assert orjson.loads(CODEC.encode(Plain(1, "x"))) == {"type": "Plain", "v": 3, "a": 1, "b": "x"}
    assert CODEC.version(Plain) == 3
    decoded = CODEC.decode(CODEC.encode(EVERYTHING))
    assert isinstance(decoded, Everything)
    assert decoded.color is Color.BLUE and decoded.level is Level.HIGH
    assert isinstance(decoded.ints, tuple) and isinstance(decoded.names, list)
    assert isinstance(decoded.points[0], Point)
    body = orjson.loads(CODEC.encode(EVERYTHING))
    assert (body["points"][0], body["compact"], body["one"]) == ({"x": 1, "y": 2}, [[5, 6]], [7, 8])


def test_commands_and_images_embed_their_own_encoding_verbatim() -> None:
    data = CODEC.encode(WithCommands(3, COMMANDS, None))
    body = orjson.loads(data)
    assert body["commands"] == [orjson.loads(encode_command(c)) for c in COMMANDS]
    assert orjson.loads(CODEC.encode(WithImage(1, IMAGE)))["image"] == orjson.loads(encode_image(IMAGE))


def test_raw_payloads_are_spliced_without_re_encoding() -> None:
    payloads = [encode_command(c) for c in COMMANDS]
    data = CODEC.encode_fields(WithCommands, first=3, commands=tuple(Raw(p) for p in payloads), maybe=None)
    assert data == CODEC.encode(WithCommands(3, COMMANDS, None))
    for p in payloads:
        assert p in data
    whole = CODEC.encode_fields(WithCommands, first=3, commands=Raw(b"[" + b",".join(payloads) + b"]"), maybe=None)
    assert whole == data
    image = CODEC.encode_fields(WithImage, high=1, image=Raw(encode_image(IMAGE)))
    assert CODEC.decode(image) == WithImage(1, IMAGE)


def test_encode_fields_wants_exactly_the_fields() -> None:
    with pytest.raises(TypeError):
        CODEC.encode_fields(WithImage, high=1)
    with pytest.raises(TypeError):
        CODEC.encode_fields(WithImage, high=1, image=Raw(b"{}"), extra=2)


def _body(**fields: object) -> bytes:
    return orjson.dumps({"type": "Plain", "v": 3, "a": 1, "b": "x", **fields})


def _shapes(**overrides: object) -> bytes:
    body = orjson.loads(CODEC.encode(Shapes(Point(1, 2), None, {})))
    body.update(overrides)
    return orjson.dumps(body)


def _everything(**overrides: object) -> bytes:
    body = orjson.loads(CODEC.encode(EVERYTHING))
    body.update(overrides)
    return orjson.dumps(body)


@pytest.mark.parametrize(
    ("data", "problem", "message_type", "path"),
    [
        (b"x" * 4097, Problem.TOO_LARGE, None, ""),
        (b"not json", Problem.NOT_JSON, None, ""),
        (b"[1, 2]", Problem.NOT_OBJECT, None, ""),
        (b'{"a": 1}', Problem.UNKNOWN_TYPE, None, ""),
        (b'{"type": "Nope", "v": 1}', Problem.UNKNOWN_TYPE, None, ""),
        (b'{"type": 7, "v": 1}', Problem.UNKNOWN_TYPE, None, ""),
        (b'{"type": "Plain", "a": 1, "b": "x"}', Problem.VERSION, "Plain", ""),
        (_body(v=1), Problem.VERSION, "Plain", ""),
        (_body(v=True), Problem.VERSION, "Plain", ""),
        (b'{"type": "Plain", "v": 3, "a": 1}', Problem.MISSING_FIELDS, "Plain", ""),
        (_body(c=3), Problem.EXTRA_FIELDS, "Plain", ""),
        (_body(a="1"), Problem.WRONG_TYPE, "Plain", "a"),
        (_body(a=True), Problem.WRONG_TYPE, "Plain", "a"),
        (_body(a=1.0), Problem.WRONG_TYPE, "Plain", "a"),
        (_body(a=2**63), Problem.BAD_VALUE, "Plain", "a"),
        (_body(b=None), Problem.WRONG_TYPE, "Plain", "b"),
        (_everything(b=0), Problem.WRONG_TYPE, "Everything", "b"),
        (_everything(f="1"), Problem.WRONG_TYPE, "Everything", "f"),
        (_everything(data=1), Problem.WRONG_TYPE, "Everything", "data"),
        (_everything(data="!!"), Problem.BAD_VALUE, "Everything", "data"),
        (_everything(nothing=0), Problem.WRONG_TYPE, "Everything", "nothing"),
        (_everything(maybe=3), Problem.WRONG_TYPE, "Everything", "maybe"),
        (_everything(color="green"), Problem.BAD_VALUE, "Everything", "color"),
        (_everything(color=None), Problem.WRONG_TYPE, "Everything", "color"),
        (_everything(level=3), Problem.BAD_VALUE, "Everything", "level"),
        (_everything(mode="c"), Problem.BAD_VALUE, "Everything", "mode"),
        (_everything(topic_id="x"), Problem.BAD_VALUE, "Everything", "topic_id"),
        (_everything(topic_id=1), Problem.WRONG_TYPE, "Everything", "topic_id"),
        (_everything(ints={"a": 1}), Problem.WRONG_TYPE, "Everything", "ints"),
        (_everything(ints=[1, "2"]), Problem.WRONG_TYPE, "Everything", "ints[1]"),
        (_everything(pair=["p"]), Problem.BAD_VALUE, "Everything", "pair"),
        (_everything(pair=["p", "q"]), Problem.WRONG_TYPE, "Everything", "pair[1]"),
        (_everything(pair="p"), Problem.WRONG_TYPE, "Everything", "pair"),
        (_everything(points=[{"x": 1}]), Problem.MISSING_FIELDS, "Everything", "points[0]"),
        (_everything(points=[{"x": 1, "y": 2, "z": 3}]), Problem.EXTRA_FIELDS, "Everything", "points[0]"),
        (_everything(points=[{"x": 1, "y": "2"}]), Problem.WRONG_TYPE, "Everything", "points[0].y"),
        (_everything(where=[1, 2]), Problem.WRONG_TYPE, "Everything", "where"),
        (_everything(labels=[]), Problem.WRONG_TYPE, "Everything", "labels"),
        (_everything(labels={"k": "v"}), Problem.WRONG_TYPE, "Everything", "labels['k']"),
        (_everything(bounded=[1, 2, 3, 4]), Problem.TOO_MANY_ITEMS, "Everything", "bounded"),
        (_everything(status="maybe"), Problem.BAD_VALUE, "Everything", "status"),
        (_everything(compact=[{"x": 1, "y": 2}]), Problem.WRONG_TYPE, "Everything", "compact[0]"),
        (_everything(compact=[[1]]), Problem.BAD_VALUE, "Everything", "compact[0]"),
        (_everything(compact=[[1, "2"]]), Problem.WRONG_TYPE, "Everything", "compact[0].y"),
        (_everything(one=[1, 2, 3]), Problem.BAD_VALUE, "Everything", "one"),
        (
            orjson.dumps(
                {"type": "WithCommands", "v": 1, "first": 0, "commands": [{"v": 1, "type": "Nope"}], "maybe": None}
            ),
            Problem.BAD_VALUE,
            "WithCommands",
            "commands[0]",
        ),
        (
            orjson.dumps({"type": "WithCommands", "v": 1, "first": 0, "commands": [{}] * 5, "maybe": None}),
            Problem.TOO_MANY_ITEMS,
            "WithCommands",
            "commands",
        ),
        (b'{"type": "WithImage", "v": 1, "high": 1, "image": {"v": 9}}', Problem.BAD_VALUE, "WithImage", "image"),
        (_shapes(shape={"x": 1, "y": 2}), Problem.BAD_VALUE, "Shapes", "shape"),
        (_shapes(shape={"type": "Plain", "a": 1, "b": "x"}), Problem.BAD_VALUE, "Shapes", "shape"),
        (_shapes(shape={"type": 1, "x": 1, "y": 2}), Problem.BAD_VALUE, "Shapes", "shape"),
        (_shapes(shape=[1, 2]), Problem.WRONG_TYPE, "Shapes", "shape"),
        (_shapes(shape={"type": "Point", "x": 1}), Problem.MISSING_FIELDS, "Shapes", "shape"),
        (
            _shapes(shape={"type": "Circle", "radius": 1, "labels": {"a": 1}}),
            Problem.WRONG_TYPE,
            "Shapes",
            "shape.labels['a']",
        ),
        (_shapes(maybe={"type": "Point", "x": 1, "y": 2, "z": 0}), Problem.EXTRA_FIELDS, "Shapes", "maybe"),
        (_shapes(settings=[]), Problem.WRONG_TYPE, "Shapes", "settings"),
    ],
)
def test_refusals_say_what_is_wrong_and_where(
    data: bytes, problem: Problem, message_type: str | None, path: str
) -> None:
    with pytest.raises(ProtocolError) as info:
        CODEC.decode(data)
    assert (info.value.problem, info.value.message_type, info.value.path) == (problem, message_type, path)
    assert info.value.detail in str(info.value)


def test_encoding_refuses_what_it_cannot_write() -> None:
    with pytest.raises(ProtocolError) as info:
        CODEC.encode(Plain(1, "x" * 5000))
    assert info.value.problem is Problem.TOO_LARGE
    with pytest.raises(ProtocolError) as info:
        CODEC.encode(replace(EVERYTHING, f=float("nan")))
    assert (info.value.problem, info.value.path) == (Problem.UNENCODABLE, "f")
    with pytest.raises(ProtocolError) as info:
        CODEC.encode(Plain(2**64, "x"))
    assert info.value.problem is Problem.UNENCODABLE
    with pytest.raises(TypeError):
        CODEC.encode(Point(1, 2))  # type: ignore[arg-type]


def test_registration_refuses_what_it_cannot_carry() -> None:
    @dataclass(frozen=True)
    class Union2:
        v: int | str

    @dataclass(frozen=True)
    class Reserved:
        type: str

    @dataclass
    class Mutable:
        a: int

    @dataclass(frozen=True)
    class Obj:
        o: object

    @dataclass(frozen=True)
    class Mixed:
        v: Point | int

    for cls in (Union2, Reserved, Mutable, Obj, Node, Mixed):
        with pytest.raises(TypeError):
            Codec("bad", {cls: 1})
    with pytest.raises(TypeError):
        Codec("bad", {Plain: 0})
    with pytest.raises(ValueError):
        Codec("bad", {Plain: 1}, bytes_max=BYTES_MAX + 1)


def test_a_plain_codec_raises_wire_error() -> None:
    codec: Codec[Plain] = Codec("plain", {Plain: 1})
    with pytest.raises(WireError, match="unknown message type"):
        codec.decode(b'{"type": "Everything", "v": 1}')


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.floats(allow_nan=False) | st.sampled_from("xy"),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("xy"), inner, max_size=2),
    max_leaves=8,
)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["type", "v", "a", "b", "x", "i", "points", "commands"]), json_values))
def test_decode_refuses_garbage_with_wire_error_only(body: dict[str, object]) -> None:
    try:
        data = orjson.dumps(body)
    except TypeError:
        return
    for tag in ("Plain", "Everything", "WithCommands", body.get("type")):
        candidate = {**body, "type": tag, "v": body.get("v", 1)}
        try:
            CODEC.decode(orjson.dumps(candidate))
        except ProtocolError:
            pass
        except TypeError:
            pass  # orjson cannot write the candidate (an int beyond 64 bits): nothing to decode
    with contextlib.suppress(ProtocolError):
        CODEC.decode(data)


@given(
    st.builds(
        Plain,
        st.integers(-(2**63), 2**63 - 1),
        st.text(max_size=50),
    )
)
def test_plain_messages_round_trip(msg: Plain) -> None:
    assert CODEC.decode(CODEC.encode(msg)) == msg


@given(
    st.builds(
        Point,
        st.integers(-(2**63), 2**63 - 1),
        st.integers(-(2**63), 2**63 - 1),
    ),
    st.binary(max_size=30),
    st.floats(allow_nan=False, allow_infinity=False),
)
def test_values_round_trip(point: Point, data: bytes, f: float) -> None:
    msg = replace(EVERYTHING, where=point, data=data, f=f)
    assert CODEC.decode(CODEC.encode(msg)) == msg
