"""SaslHandshake (API key 17), versions 0-1: the client names its SASL mechanism (KIP-43; v1: tokens follow in
SaslAuthenticate requests, KIP-152; v0: raw tokens without Kafka framing).

Runs in a shard process. On a SASL listener the connection answers it itself, from its ``SaslSession``
(``rafka_shards.security.sasl_session``), before any handler runs: this module encodes that response. A handshake
that reaches ``handle`` came in on a listener without SASL, where Kafka answers ILLEGAL_SASL_STATE with no
mechanisms.
"""

from __future__ import annotations

from typing import Any

from rafka_shards.model import ErrorCode
from rafka_shards.protocol import kio_codec
from rafka_shards.shard.kafka.api import ApiHandler, RequestContext, ResponseBody

API_KEY = 17


def response(version: int, error_code: ErrorCode, mechanisms: tuple[str, ...]) -> bytes:
    return kio_codec.encode_response(API_KEY, version, {"error_code": int(error_code), "mechanisms": mechanisms})


async def handle(ctx: RequestContext, req: Any) -> ResponseBody | None:
    return response(ctx.version, ErrorCode.ILLEGAL_SASL_STATE, ())


HANDLER = ApiHandler(key=API_KEY, min_version=0, max_version=1, handle=handle)
