"""SaslAuthenticate (API key 36), versions 0-2: one SASL token each way (KIP-152; v1 adds session_lifetime_ms for
re-authentication, KIP-368; v2 is flexible).

Runs in a shard process. On a SASL listener the connection answers it itself, from its ``SaslSession``
(``rafka_shards.security.sasl_session``), with the mechanism's step run off the event loop when it is slow: this
module encodes that response. One that reaches ``handle`` came in on a listener without SASL, where Kafka answers
ILLEGAL_SASL_STATE.
"""

from __future__ import annotations

import datetime
from typing import Any

from rafka_shards.model import ErrorCode
from rafka_shards.protocol import kio_codec
from rafka_shards.shard.kafka.api import ApiHandler, RequestContext, ResponseBody

API_KEY = 36


def response(
    version: int, error_code: ErrorCode, error_message: str | None, auth_bytes: bytes, session_lifetime_ms: int
) -> bytes:
    data: dict[str, Any] = {"error_code": int(error_code), "error_message": error_message, "auth_bytes": auth_bytes}
    if version >= 1:
        data["session_lifetime"] = datetime.timedelta(milliseconds=session_lifetime_ms)
    return kio_codec.encode_response(API_KEY, version, data)


async def handle(ctx: RequestContext, req: Any) -> ResponseBody | None:
    return response(ctx.version, ErrorCode.ILLEGAL_SASL_STATE, "SASL is not enabled on this listener", b"", 0)


HANDLER = ApiHandler(key=API_KEY, min_version=0, max_version=2, handle=handle)
