"""One typed, versioned codec for the messages the node's processes send each other (channel, process link, forwarding).

Pure (no I/O) and safe on untrusted bytes; runs in every process. A ``Codec`` is built once per protocol from its
frozen dataclass messages, each with a schema version; the reflection over their fields happens then, once per type,
and yields one small field codec per field, so encoding and decoding a message only runs those.

Format: one message is one JSON object (orjson), ``{"type": <class name>, "v": <schema version>, <field>: <value>,
...}``, like the metadata log's commands. Every field is present; nothing else is. Field types and their JSON:

==================================  ===========================================================================
``int`` / ``bool`` / ``str``        number (a signed 64-bit integer; never true/false) / true, false / string
``float``                           number (finite; an integer is accepted)
``None``, ``X | None``              null
``bytes``                           base64 string
``enum.Enum`` subclass              its value (``str`` or ``int``)
``typing.Literal[...]``             one of the literal values
``uuid.UUID``                       its string form
``tuple[X, ...]``, ``list[X]``      array (``max_items`` bounds the length: ``field(metadata=rules(...))``)
``tuple[X, Y]``                     array of exactly that length
``dict[str, X]``, ``Mapping[str, X]``  object (decoded as a ``dict``)
a frozen dataclass                  object of its fields (no type or version: the field's type says which);
                                    with ``rules(positional=True)``, an array of their values in field order
``A | B | ...`` of frozen dataclasses  object of the value's fields plus its class name under ``"type"``
``controller.commands.Command``     the command's own versioned encoding (``encode_command``), verbatim
``controller.image.MetadataImage``  the image's own versioned encoding (``encode_image``), verbatim
==================================  ===========================================================================

The last two keep the metadata log's format: a shard receives the log's payloads exactly as they were written, and
the sender can splice already-encoded JSON in with ``Raw`` (``Codec.encode_fields``) instead of re-encoding it.
A field ``rules(one_of=...)`` restricts a value to a set. Decoding refuses anything else with a ``WireError`` that says
what is wrong (``problem``), in which message type and at which field path. Encoding does not re-check the types the
annotations promise (mypy does); what orjson cannot encode, or a message over the size limit, raises ``WireError``.

Versions: the processes of a node run the same code, so a message of another schema version is refused, not
translated; bump a message's version when its fields change meaning.
"""

from __future__ import annotations

import binascii
import collections.abc
import dataclasses
import enum
import functools
import math
import operator
import types
import typing
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

import orjson

from controller.commands import Command, CommandDecodeError, command_from_json, encode_command
from controller.image import ImageDecodeError, MetadataImage, encode_image, image_from_json

BYTES_MAX = 64 * 1024 * 1024  # no codec takes a message larger than this
TYPE_KEY = "type"  # envelope keys: no message may have a field of these names
VERSION_KEY = "v"
INT_MIN = -(2**63)
INT_MAX = 2**63 - 1
VERSION_MAX = 2**15  # schema versions are 1..VERSION_MAX

M = TypeVar("M")


class Problem(enum.Enum):
    """What is wrong with a message."""

    TOO_LARGE = "too_large"  # more bytes than the codec's limit
    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"  # JSON, but not an object
    UNKNOWN_TYPE = "unknown_type"  # the "type" is missing or not a registered message
    VERSION = "version"  # the "v" is missing or not the registered schema version
    MISSING_FIELDS = "missing_fields"
    EXTRA_FIELDS = "extra_fields"
    WRONG_TYPE = "wrong_type"  # a value of the wrong JSON type (a string for an int, true for an int, ...)
    BAD_VALUE = "bad_value"  # the right JSON type, but not a valid value (out of range, not in one_of, ...)
    TOO_MANY_ITEMS = "too_many_items"  # a sequence over its field's max_items
    UNENCODABLE = "unencodable"  # encoding: a value orjson cannot encode


class WireError(Exception):
    """A message that cannot be decoded (or encoded): ``problem`` says what, ``message_type`` (the registered name, if
    known) and ``path`` (``field``, ``field[2].sub``) where."""

    def __init__(
        self, detail: str, problem: Problem = Problem.BAD_VALUE, message_type: str | None = None, path: str = ""
    ) -> None:
        self.detail = detail
        self.problem = problem
        self.message_type = message_type
        self.path = path
        where = ".".join(p for p in (message_type, path) if p)
        super().__init__(f"{where}: {detail}" if where else detail)


class _Invalid(Exception):
    """Raised inside the field codecs; the codec turns it into its ``WireError`` with the path collected on the way
    out (so the happy path builds no path strings)."""

    def __init__(self, problem: Problem, detail: str) -> None:
        self.problem = problem
        self.detail = detail
        self.path: list[str] = []


def rules(
    *, max_items: int | None = None, one_of: Iterable[object] | None = None, positional: bool = False
) -> dict[str, object]:
    """``dataclasses.field(metadata=rules(...))``: a bound on a sequence field's length; the values a field may take;
    ``positional``: the field's dataclass values (or the dataclass items of its sequence) are arrays of their field
    values in order instead of objects (smaller and faster for many small items, such as per-partition stats)."""
    out: dict[str, object] = {}
    if max_items is not None:
        out["wire_max_items"] = max_items
    if one_of is not None:
        out["wire_one_of"] = frozenset(one_of)
    if positional:
        out["wire_positional"] = True
    return out


@dataclasses.dataclass(frozen=True, slots=True)
class Raw:
    """JSON text already encoded (metadata log payloads, an encoded image), spliced in verbatim by
    ``Codec.encode_fields``: as a whole field's value, or as one ``Command`` or ``MetadataImage`` in a sequence.
    Trusted: it is not checked."""

    data: bytes


# ---- field codecs -------------------------------------------------------------------------------------------------


class _Field:
    """One field type: ``load`` checks a parsed JSON value and returns the Python value; ``jsonable`` gives what
    orjson encodes (``identity``: the value itself); ``raw`` codecs hold verbatim JSON and encode with ``dump``."""

    identity = True
    raw = False

    def load(self, v: Any) -> Any:
        raise NotImplementedError

    def jsonable(self, v: Any) -> Any:
        return v

    def dump(self, v: Any) -> bytes:
        return orjson.dumps(self.jsonable(v))


def _wrong(expected: str, v: Any) -> _Invalid:
    return _Invalid(Problem.WRONG_TYPE, f"expected {expected}, got {type(v).__name__}")


class _Int(_Field):
    def load(self, v: Any) -> Any:
        if type(v) is not int:  # bool is an int in Python: true/false is not a number here
            raise _wrong("an integer", v)
        if not INT_MIN <= v <= INT_MAX:
            raise _Invalid(Problem.BAD_VALUE, f"{v} is not a signed 64-bit integer")
        return v


class _Exact(_Field):
    def __init__(self, cls: type, name: str) -> None:
        self.cls = cls
        self.name = name

    def load(self, v: Any) -> Any:
        if type(v) is not self.cls:
            raise _wrong(self.name, v)
        return v


class _Float(_Field):
    identity = False

    def load(self, v: Any) -> Any:
        if type(v) is float:
            return v
        if type(v) is int:
            return float(v)
        raise _wrong("a number", v)

    def jsonable(self, v: Any) -> Any:
        if not math.isfinite(v):  # orjson would write null
            raise _Invalid(Problem.UNENCODABLE, f"{v} is not a finite number")
        return v


class _Bytes(_Field):
    identity = False

    def load(self, v: Any) -> Any:
        if type(v) is not str:
            raise _wrong("a base64 string", v)
        try:
            return binascii.a2b_base64(v, strict_mode=True)
        except (binascii.Error, ValueError):
            raise _Invalid(Problem.BAD_VALUE, "not base64") from None

    def jsonable(self, v: Any) -> Any:
        return binascii.b2a_base64(v, newline=False).decode("ascii")


class _Enum(_Field):
    identity = False

    def __init__(self, cls: type[enum.Enum]) -> None:
        self.cls = cls
        self.by_value = {m.value: m for m in cls}
        kinds = {type(m.value) for m in cls}
        if not kinds <= {str, int}:
            raise TypeError(f"{cls.__name__}: only enums of str or int values are supported")

    def load(self, v: Any) -> Any:
        if type(v) not in (str, int):
            raise _wrong(f"a {self.cls.__name__} value", v)
        member = self.by_value.get(v)
        if member is None:
            raise _Invalid(Problem.BAD_VALUE, f"{v!r} is not a {self.cls.__name__}")
        return member

    def jsonable(self, v: Any) -> Any:
        return v.value


class _OneOf(_Field):
    """A value of an inner type restricted to a set (``Literal[...]``, ``rules(one_of=...)``)."""

    def __init__(self, inner: _Field, allowed: frozenset[object]) -> None:
        self.inner = inner
        self.allowed = allowed
        self.identity = inner.identity

    def load(self, v: Any) -> Any:
        value = self.inner.load(v)
        if value not in self.allowed:
            raise _Invalid(Problem.BAD_VALUE, f"{value!r} is not one of {sorted(map(repr, self.allowed))}")
        return value

    def jsonable(self, v: Any) -> Any:
        return self.inner.jsonable(v)


class _Uuid(_Field):
    identity = False  # orjson writes UUIDs, but as a plain string: keep it explicit

    def load(self, v: Any) -> Any:
        if type(v) is not str:
            raise _wrong("a UUID string", v)
        try:
            return uuid.UUID(v)
        except ValueError:
            raise _Invalid(Problem.BAD_VALUE, "not a UUID") from None

    def jsonable(self, v: Any) -> Any:
        return str(v)


class _Optional(_Field):
    def __init__(self, inner: _Field) -> None:
        self.inner = inner
        self.identity = inner.identity
        self.raw = inner.raw

    def load(self, v: Any) -> Any:
        return None if v is None else self.inner.load(v)

    def jsonable(self, v: Any) -> Any:
        return None if v is None else self.inner.jsonable(v)

    def dump(self, v: Any) -> bytes:
        return b"null" if v is None else self.inner.dump(v)


class _Sequence(_Field):
    def __init__(self, item: _Field, make: Callable[[list[Any]], Any], max_items: int | None) -> None:
        self.item = item
        self.make = make
        self.max_items = max_items
        self.identity = item.identity  # orjson writes tuples and lists as arrays
        self.raw = item.raw

    def load(self, v: Any) -> Any:
        if type(v) is not list:
            raise _wrong("an array", v)
        if self.max_items is not None and len(v) > self.max_items:
            raise _Invalid(Problem.TOO_MANY_ITEMS, f"{len(v)} items, at most {self.max_items}")
        load = self.item.load
        out = []
        for i, x in enumerate(v):
            try:
                out.append(load(x))
            except _Invalid as e:
                e.path.append(f"[{i}]")
                raise
        return self.make(out)

    def jsonable(self, v: Any) -> Any:
        jsonable = self.item.jsonable
        return [jsonable(x) for x in v]

    def dump(self, v: Any) -> bytes:
        if not self.raw:
            return orjson.dumps(v if self.identity else self.jsonable(v))
        dump = self.item.dump
        return b"[" + b",".join([dump(x) for x in v]) + b"]"


class _FixedTuple(_Field):
    def __init__(self, items: list[_Field]) -> None:
        self.items = items
        self.identity = all(f.identity for f in items)
        self.raw = any(f.raw for f in items)

    def load(self, v: Any) -> Any:
        if type(v) is not list:
            raise _wrong("an array", v)
        if len(v) != len(self.items):
            raise _Invalid(Problem.BAD_VALUE, f"{len(v)} items, expected {len(self.items)}")
        out = []
        for i, (f, x) in enumerate(zip(self.items, v, strict=True)):
            try:
                out.append(f.load(x))
            except _Invalid as e:
                e.path.append(f"[{i}]")
                raise
        return tuple(out)

    def jsonable(self, v: Any) -> Any:
        return [f.jsonable(x) for f, x in zip(self.items, v, strict=True)]

    def dump(self, v: Any) -> bytes:
        if not self.raw:
            return orjson.dumps(v if self.identity else self.jsonable(v))
        return b"[" + b",".join([f.dump(x) for f, x in zip(self.items, v, strict=True)]) + b"]"


class _Map(_Field):
    def __init__(self, value: _Field, max_items: int | None) -> None:
        self.value = value
        self.max_items = max_items
        self.identity = value.identity
        self.raw = value.raw

    def load(self, v: Any) -> Any:
        if type(v) is not dict:
            raise _wrong("an object", v)
        if self.max_items is not None and len(v) > self.max_items:
            raise _Invalid(Problem.TOO_MANY_ITEMS, f"{len(v)} items, at most {self.max_items}")
        out = {}
        for k, x in v.items():
            try:
                out[k] = self.value.load(x)
            except _Invalid as e:
                e.path.append(f"[{k!r}]")
                raise
        return out

    def jsonable(self, v: Any) -> Any:
        return {k: self.value.jsonable(x) for k, x in v.items()}

    def dump(self, v: Any) -> bytes:
        if not self.raw:
            return orjson.dumps(v if self.identity else self.jsonable(v))
        parts = [orjson.dumps(k) + b":" + self.value.dump(x) for k, x in v.items()]
        return b"{" + b",".join(parts) + b"}"


class _Extension(_Field):
    """A type with its own versioned JSON encoding (``Command``, ``MetadataImage``): embedded verbatim."""

    identity = False
    raw = True

    def __init__(
        self, name: str, encode: Callable[[Any], bytes], from_json: Callable[[Any], Any], error: type[Exception]
    ) -> None:
        self.name = name
        self.encode = encode
        self.from_json = from_json
        self.error = error

    def load(self, v: Any) -> Any:
        try:
            return self.from_json(v)
        except self.error as e:
            raise _Invalid(Problem.BAD_VALUE, f"not a {self.name}: {e}") from None

    def jsonable(self, v: Any) -> Any:
        return orjson.loads(self.dump(v))  # unused by the codec (a raw field is always dumped), but true

    def dump(self, v: Any) -> bytes:
        return v.data if type(v) is Raw else self.encode(v)


_EXTENSIONS: dict[object, _Field] = {
    Command: _Extension("command", encode_command, command_from_json, CommandDecodeError),
    MetadataImage: _Extension("metadata image", encode_image, image_from_json, ImageDecodeError),
}
_SIMPLE: dict[object, _Field] = {
    int: _Int(),
    bool: _Exact(bool, "true or false"),
    str: _Exact(str, "a string"),
    type(None): _Exact(type(None), "null"),
    float: _Float(),
    bytes: _Bytes(),
    uuid.UUID: _Uuid(),
}


class _Object(_Field):
    """A dataclass's fields as one JSON object: the body of a message, or a nested dataclass value."""

    def __init__(self, cls: type) -> None:
        self.cls = cls
        self.names: tuple[str, ...] = ()
        self.codecs: tuple[_Field, ...] = ()
        self.keys: tuple[bytes, ...] = ()  # b',"name":' for each field, for the raw path

    def resolve(self, resolving: set[type]) -> None:
        hints = typing.get_type_hints(self.cls)
        fields = dataclasses.fields(self.cls)
        for f in fields:
            if f.name in (TYPE_KEY, VERSION_KEY):
                raise TypeError(f"{self.cls.__name__}.{f.name}: a field may not be named {f.name!r}")
        self.names = tuple(f.name for f in fields)
        self.codecs = tuple(_resolve(hints[f.name], f.metadata, resolving) for f in fields)
        self.keys = tuple(b"," + orjson.dumps(n) + b":" for n in self.names)
        self._loaders = tuple((n, c.load) for n, c in zip(self.names, self.codecs, strict=True))
        self.identity = all(c.identity for c in self.codecs)  # orjson writes dataclasses as objects of their fields
        self.raw = any(c.raw for c in self.codecs)
        self._fields = set(self.names)

    def load(self, v: Any) -> Any:
        if type(v) is not dict:
            raise _wrong("an object", v)
        return self.load_fields(v)

    def load_fields(self, body: dict[str, Any]) -> Any:
        if len(body) != len(self.names) or not self._fields.issuperset(body):
            missing = self._fields.difference(body)
            if missing:
                raise _Invalid(Problem.MISSING_FIELDS, f"missing fields {sorted(missing)}")
            raise _Invalid(Problem.EXTRA_FIELDS, f"unexpected fields {sorted(set(body) - self._fields)}")
        args = []
        for name, load in self._loaders:
            try:
                args.append(load(body[name]))
            except _Invalid as e:
                e.path.append(name)
                raise
        return self.cls(*args)

    def jsonable(self, v: Any) -> Any:
        out = {}
        for name, codec in zip(self.names, self.codecs, strict=True):
            try:
                out[name] = codec.jsonable(getattr(v, name))
            except _Invalid as e:
                e.path.append(name)
                raise
        return out

    def dump(self, v: Any) -> bytes:
        if not self.raw:
            return orjson.dumps(v if self.identity else self.jsonable(v))
        return b"{" + self.dump_fields([getattr(v, n) for n in self.names])[1:] + b"}"

    def dump_fields(self, values: list[Any]) -> bytes:
        """``,"a":1,"b":2`` (a leading comma): the fields' JSON, spliced after the envelope or an opening brace."""
        parts = []
        for key, codec, value in zip(self.keys, self.codecs, values, strict=True):
            parts.append(key)
            try:
                parts.append(value.data if type(value) is Raw else codec.dump(value))
            except _Invalid as e:
                e.path.append(key[2:-2].decode())
                raise
        return b"".join(parts)


class _Positional(_Field):
    """A dataclass's fields as one JSON array, in field order (``rules(positional=True)``)."""

    identity = False

    def __init__(self, obj: _Object) -> None:
        self.obj = obj
        self.raw = obj.raw
        self._loaders = tuple(c.load for c in obj.codecs)
        names = obj.names
        get = operator.attrgetter(*names) if names else (lambda v: ())
        self._values: Callable[[Any], tuple[Any, ...]] = (lambda v: (get(v),)) if len(names) == 1 else get

    def load(self, v: Any) -> Any:
        if type(v) is not list:
            raise _wrong("an array", v)
        if len(v) != len(self._loaders):
            raise _Invalid(Problem.BAD_VALUE, f"{len(v)} items, expected the {len(self._loaders)} fields")
        args = []
        for name, load, x in zip(self.obj.names, self._loaders, v, strict=True):
            try:
                args.append(load(x))
            except _Invalid as e:
                e.path.append(name)
                raise
        return self.obj.cls(*args)

    def jsonable(self, v: Any) -> Any:
        if self.obj.identity:
            return self._values(v)  # a tuple: orjson writes it as an array
        return list(self.obj.jsonable(v).values())

    def dump(self, v: Any) -> bytes:
        if not self.raw:
            return orjson.dumps(self.jsonable(v))
        codecs = self.obj.codecs
        return b"[" + b",".join([c.dump(x) for c, x in zip(codecs, self._values(v), strict=True)]) + b"]"


class _Tagged(_Field):
    """A union of dataclasses: the object of the value's fields with its class name under ``"type"`` first."""

    identity = False

    def __init__(self, objects: list[_Object]) -> None:
        self.by_type = {o.cls: o for o in objects}
        self.by_tag = {o.cls.__name__: o for o in objects}
        if len(self.by_tag) != len(objects):
            raise TypeError(f"two dataclasses of one name in a union: {sorted(o.cls.__qualname__ for o in objects)}")
        self.raw = any(o.raw for o in objects)
        self._heads = {o.cls: b"{" + orjson.dumps(TYPE_KEY) + b":" + orjson.dumps(o.cls.__name__) for o in objects}

    def load(self, v: Any) -> Any:
        if type(v) is not dict:
            raise _wrong("an object", v)
        tag = v.get(TYPE_KEY)
        obj = self.by_tag.get(tag) if type(tag) is str else None
        if obj is None:
            raise _Invalid(Problem.BAD_VALUE, f"type {tag!r} is not one of {sorted(self.by_tag)}")
        return obj.load_fields({k: x for k, x in v.items() if k != TYPE_KEY})

    def _object(self, v: Any) -> _Object:
        obj = self.by_type.get(type(v))
        if obj is None:
            raise _Invalid(Problem.UNENCODABLE, f"{type(v).__name__} is not one of {sorted(self.by_tag)}")
        return obj

    def jsonable(self, v: Any) -> Any:
        obj = self._object(v)
        return {TYPE_KEY: obj.cls.__name__, **obj.jsonable(v)}

    def dump(self, v: Any) -> bytes:
        obj = self._object(v)
        if not obj.raw:
            return orjson.dumps(self.jsonable(v))
        return self._heads[obj.cls] + obj.dump_fields([getattr(v, n) for n in obj.names]) + b"}"


_OBJECTS: dict[type, _Object] = {}  # every dataclass resolved so far, message or nested: reflection happens once


def _dataclass(cls: type, resolving: set[type]) -> _Object:
    known = _OBJECTS.get(cls)
    if known is not None:
        return known
    if cls in resolving:
        raise TypeError(f"{cls.__name__} contains itself: recursive messages are not supported")
    obj = _Object(cls)
    resolving.add(cls)
    obj.resolve(resolving)
    resolving.discard(cls)
    _OBJECTS[cls] = obj
    return obj


def _resolve(t: Any, metadata: Mapping[str, object], resolving: set[type]) -> _Field:
    """The field codec for annotation ``t`` (``metadata``: the field's ``rules``)."""
    codec = _resolve_type(t, metadata, resolving)
    one_of = metadata.get("wire_one_of")
    if isinstance(one_of, frozenset):
        codec = _OneOf(codec, one_of)
    return codec


def _resolve_type(t: Any, metadata: Mapping[str, object], resolving: set[type]) -> _Field:
    max_items = metadata.get("wire_max_items")
    if max_items is not None and not isinstance(max_items, int):
        raise TypeError("max_items must be an integer")
    known = _EXTENSIONS.get(t) or _SIMPLE.get(t)
    if known is not None:
        return known
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) > 1 and all(isinstance(a, type) and dataclasses.is_dataclass(a) for a in rest):
            tagged = _Tagged([_dataclass(a, resolving) for a in rest])
            return tagged if len(rest) == len(args) else _Optional(tagged)
        if len(rest) == len(args):
            raise TypeError(f"unsupported union {t}: only X | None and unions of dataclasses")
        inner = functools.reduce(operator.or_, rest)
        return _Optional(_resolve_type(inner, metadata, resolving))
    if origin is typing.Literal:
        kinds = {type(a) for a in args}
        if not kinds <= {str, int} or len(kinds) != 1:
            raise TypeError(f"unsupported {t}: literals of one type, str or int")
        return _OneOf(_SIMPLE[kinds.pop()], frozenset(args))
    item_rules = {"wire_positional": True} if metadata.get("wire_positional") else {}
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return _Sequence(_resolve(args[0], item_rules, resolving), tuple, max_items)
    if origin is tuple:
        return _FixedTuple([_resolve(a, {}, resolving) for a in args])
    if origin is list:
        return _Sequence(_resolve(args[0], item_rules, resolving), list, max_items)
    if origin in (dict, collections.abc.Mapping) and args[0] is str:
        return _Map(_resolve(args[1], {}, resolving), max_items)
    if isinstance(t, type) and issubclass(t, enum.Enum):
        return _Enum(t)
    if isinstance(t, type) and dataclasses.is_dataclass(t):
        obj = _dataclass(t, resolving)
        return _Positional(obj) if metadata.get("wire_positional") else obj
    raise TypeError(f"unsupported field type {t!r}")


# ---- the codec ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _Message:
    tag: str
    version: int
    body: _Object
    head: bytes  # b'{"type":"Tag","v":1'


class Codec(Generic[M]):
    """The messages of one protocol: ``encode(msg)`` -> bytes, ``decode(bytes)`` -> message, both bounded by
    ``bytes_max``. Errors are ``error`` (a ``WireError`` subclass the protocol names, so its users catch one type).

    ``messages`` maps each message type (a frozen dataclass) to its schema version; its tag on the wire is its class
    name. Unsupported field types fail here, when the protocol module is imported, not when a message is sent."""

    def __init__(
        self,
        name: str,
        messages: Mapping[type[M], int],
        *,
        bytes_max: int = BYTES_MAX,
        error: type[WireError] = WireError,
    ) -> None:
        if not 0 < bytes_max <= BYTES_MAX:
            raise ValueError(f"bytes_max must be in 1..{BYTES_MAX}")
        self.name = name
        self.bytes_max = bytes_max
        self.error = error
        self._by_type: dict[type, _Message] = {}
        self._by_tag: dict[str, _Message] = {}
        for cls, version in messages.items():
            self._register(cls, version)

    def _register(self, cls: type, version: int) -> None:
        params = getattr(cls, "__dataclass_params__", None)
        if params is None or not params.frozen:
            raise TypeError(f"{cls!r}: messages are frozen dataclasses")
        if type(version) is not int or not 1 <= version <= VERSION_MAX:
            raise TypeError(f"{cls.__name__}: a schema version is an integer in 1..{VERSION_MAX}")
        tag = cls.__name__
        if tag in self._by_tag:
            raise TypeError(f"{self.name}: two message types named {tag}")
        head = orjson.dumps({TYPE_KEY: tag, VERSION_KEY: version})[:-1]
        message = _Message(tag, version, _dataclass(cls, set()), head)
        self._by_type[cls] = message
        self._by_tag[tag] = message

    def version(self, cls: type[M]) -> int:
        return self._by_type[cls].version

    def encode(self, msg: M) -> bytes:
        message = self._by_type.get(type(msg))
        if message is None:
            raise TypeError(f"{type(msg).__name__} is not a {self.name} message")
        body = message.body
        if body.raw:
            return self._encode_raw(message, [getattr(msg, n) for n in body.names])
        if body.identity:  # orjson writes the dataclass as the object of its fields: splice it after the envelope
            fields = self._dumps(msg, message.tag)
            return self._checked(message.head + (b"," + fields[1:] if body.names else b"}"), message.tag)
        try:
            doc = {TYPE_KEY: message.tag, VERSION_KEY: message.version, **body.jsonable(msg)}
        except _Invalid as e:
            raise self._error(e, message.tag) from None
        return self._checked(self._dumps(doc, message.tag), message.tag)

    def encode_fields(self, cls: type[M], **fields: Any) -> bytes:
        """A message of type ``cls`` from its field values, where ``Raw`` JSON may stand for a field's value or for a
        ``Command`` or ``MetadataImage`` inside one (the log's payloads, spliced without decoding and re-encoding
        them)."""
        message = self._by_type[cls]
        names = message.body.names
        if set(fields) != set(names):
            raise TypeError(f"{message.tag}: fields {sorted(fields)} are not {sorted(names)}")
        return self._encode_raw(message, [fields[n] for n in names])

    def _encode_raw(self, message: _Message, values: list[Any]) -> bytes:
        try:
            data = message.head + message.body.dump_fields(values) + b"}"
        except _Invalid as e:
            raise self._error(e, message.tag) from None
        except TypeError as e:  # orjson.JSONEncodeError is a TypeError
            raise self.error(str(e), Problem.UNENCODABLE, message.tag) from None
        return self._checked(data, message.tag)

    def _dumps(self, doc: object, tag: str) -> bytes:
        try:
            return orjson.dumps(doc)
        except TypeError as e:
            raise self.error(str(e), Problem.UNENCODABLE, tag) from None

    def _checked(self, data: bytes, tag: str) -> bytes:
        if len(data) > self.bytes_max:
            raise self.error(
                f"{len(data)} bytes exceeds the {self.name} limit {self.bytes_max}", Problem.TOO_LARGE, tag
            )
        return data

    def decode(self, data: bytes) -> M:
        if len(data) > self.bytes_max:
            raise self.error(f"{len(data)} bytes exceeds the {self.name} limit {self.bytes_max}", Problem.TOO_LARGE)
        try:
            body = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise self.error(f"not JSON: {e}", Problem.NOT_JSON) from None
        if type(body) is not dict:
            raise self.error(f"a {self.name} message is a JSON object", Problem.NOT_OBJECT)
        tag = body.pop(TYPE_KEY, None)
        message = self._by_tag.get(tag) if type(tag) is str else None
        if message is None:
            raise self.error(f"unknown message type {tag!r}", Problem.UNKNOWN_TYPE)
        version = body.pop(VERSION_KEY, None)
        if type(version) is not int or version != message.version:
            raise self.error(
                f"schema version {version!r}, this node speaks {message.version}", Problem.VERSION, message.tag
            )
        try:
            return typing.cast(M, message.body.load_fields(body))
        except _Invalid as e:
            raise self._error(e, message.tag) from None

    def _error(self, e: _Invalid, tag: str) -> WireError:
        path = "".join(p if p.startswith("[") else "." + p for p in reversed(e.path)).lstrip(".")
        return self.error(e.detail, e.problem, tag, path)
