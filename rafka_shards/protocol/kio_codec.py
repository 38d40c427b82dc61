"""Request decoding and long-tail response encoding with ``kio``, whose classes are generated from Kafka's JSON specs.

Runs in every shard process; sans-IO. kio parses in Rust (fast) but serializes in Python (slow), so the hot responses
(Produce, Fetch, Metadata) use ``fast_responses`` instead and everything else comes through here.

kio has one class per (API, version) with exactly that version's fields. ``build`` lets a handler describe a response
once, as plain data holding the union of every version's fields, and keeps the fields the negotiated version has:
the spec decides what goes on the wire, not per-version code in the handler.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import importlib
import io
import types
import typing
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kio.schema.errors import ErrorCode as KioErrorCode
from kio.schema.index import api_key_map
from kio.serial import entity_reader, entity_writer
from kio.serial.errors import SerialError
from kio.static.primitive import i32Timedelta, i64Timedelta

from rafka_shards.protocol import guard

_API_NAMES: Mapping[int, str] = api_key_map


class RequestDecodeError(Exception):
    """The request body does not parse as the version its header claims; the connection is closed."""


def api_name(api_key: int) -> str | None:
    return _API_NAMES.get(api_key)


@functools.cache
def _module(api_key: int, version: int, kind: str) -> types.ModuleType | None:
    name = _API_NAMES.get(api_key)
    if name is None:
        return None
    try:
        return importlib.import_module(f"kio.schema.{name}.v{version}.{kind}")
    except ModuleNotFoundError:
        return None


@functools.cache
def request_class(api_key: int, version: int) -> type[Any] | None:
    return _entity_class(_module(api_key, version, "request"), "request")


@functools.cache
def response_class(api_key: int, version: int) -> type[Any] | None:
    return _entity_class(_module(api_key, version, "response"), "response")


def _entity_class(module: types.ModuleType | None, kind: str) -> type[Any] | None:
    if module is None:
        return None
    for value in vars(module).values():
        if (
            isinstance(value, type)
            and dataclasses.is_dataclass(value)
            and value.__module__ == module.__name__
            and getattr(getattr(value, "__type__", None), "name", None) == kind
        ):
            return value
    return None


def is_flexible(api_key: int, version: int) -> bool:
    cls = request_class(api_key, version)
    assert cls is not None, (api_key, version)
    return bool(cls.__flexible__)


@functools.cache
def _reader(cls: Any) -> Callable[[bytes, int], tuple[Any, int]]:
    return entity_reader(cls)


@functools.cache
def _writer(cls: Any) -> Callable[[io.BytesIO, Any], None]:
    return entity_writer(cls)


def decode_request(api_key: int, version: int, frame: bytes, offset: int) -> Any:
    cls: Any = request_class(api_key, version)
    assert cls is not None, (api_key, version)
    try:
        # kio's native reader aborts the process on absurd length prefixes: check the structure first.
        guard.check(cls, frame, offset)
    except guard.GuardError as e:
        raise RequestDecodeError(f"{cls.__name__} v{version}: {e}") from None
    try:
        obj, size = _reader(cls)(frame, offset)
    except (SerialError, ValueError, TypeError, KeyError, OverflowError, UnicodeDecodeError) as e:
        raise RequestDecodeError(f"{cls.__name__} v{version}: {type(e).__name__}: {e}") from None
    # Trailing bytes are ignored, as Kafka's own parser does: librdkafka 2.16 sends 3 extra bytes after
    # a Metadata v12 request for all topics, and Kafka brokers accept it.
    del size
    return obj


def encode(obj: Any) -> bytes:
    buf = io.BytesIO()
    cls: Any = type(obj)
    _writer(cls)(buf, obj)
    return buf.getvalue()


@dataclasses.dataclass(frozen=True, slots=True)
class _FieldPlan:
    name: str
    convert: Callable[[Any], Any] | None
    has_default: bool


def _unwrap_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _converter(tp: Any) -> Callable[[Any], Any] | None:
    tp = _unwrap_optional(tp)
    origin = typing.get_origin(tp)
    if origin is tuple:
        (item,) = typing.get_args(tp)[:1]
        inner = _converter(item)
        if inner is None:
            return tuple
        return lambda values: None if values is None else tuple(inner(v) for v in values)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return lambda value: value if isinstance(value, tp) else build(tp, value)
    if tp is KioErrorCode:
        return lambda value: KioErrorCode(int(value))
    if tp in (i32Timedelta, i64Timedelta):
        return lambda value: (
            value if isinstance(value, datetime.timedelta) else datetime.timedelta(milliseconds=int(value))
        )
    if tp is uuid.UUID:
        return _to_uuid
    return None


def _to_uuid(value: Any) -> uuid.UUID | None:
    if value is None or isinstance(value, uuid.UUID):
        return value if value != uuid.UUID(int=0) else None
    return uuid.UUID(bytes=bytes(value))


@functools.cache
def _plan(cls: Any) -> tuple[_FieldPlan, ...]:
    hints = typing.get_type_hints(cls)
    plans = []
    for f in dataclasses.fields(cls):
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        plans.append(_FieldPlan(f.name, _converter(hints[f.name]), has_default))
    return tuple(plans)


def build(cls: Any, data: Mapping[str, Any]) -> Any:
    """Construct kio class ``cls`` from ``data``, keeping only the fields this version has.

    Nested structs are given as mappings and lists of mappings. A field the version has but ``data`` lacks is an
    error unless kio gives it a default, so a handler cannot silently forget a field a new version added.
    """
    kwargs: dict[str, Any] = {}
    for p in _plan(cls):
        if p.name in data:
            value = data[p.name]
            kwargs[p.name] = value if p.convert is None or value is None else p.convert(value)
        elif not p.has_default:
            raise KeyError(f"{cls.__module__}.{cls.__name__} needs field {p.name!r}")
    return cls(**kwargs)


def field_names(cls: Any) -> Sequence[str]:
    return [p.name for p in _plan(cls)]


def encode_response(api_key: int, version: int, data: Mapping[str, Any]) -> bytes:
    """Build the version's response class from ``data`` (see ``build``) and serialize it."""
    cls = response_class(api_key, version)
    assert cls is not None, (api_key, version)
    return encode(build(cls, data))
