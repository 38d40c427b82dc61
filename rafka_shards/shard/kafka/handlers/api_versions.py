"""ApiVersions (API key 18), versions 0-4: the version ranges every handler declares (KIP-35, KIP-511).

Runs in a shard process. The list comes from the registry of handler declarations, so it cannot drift from the
code. A request with a version above ours is answered by the connection with a v0 body carrying
UNSUPPORTED_VERSION and this same list, as Kafka does, so the client can retry with a version we speak.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rafka_shards.model import ErrorCode
from rafka_shards.protocol import kio_codec
from rafka_shards.shard.kafka.api import ApiHandler, RequestContext, ResponseBody

API_KEY = 18


def api_keys(apis: Mapping[int, ApiHandler]) -> list[dict[str, int]]:
    return [
        {"api_key": h.key, "min_version": h.min_version, "max_version": h.max_version}
        for h in sorted(apis.values(), key=lambda h: h.key)
    ]


def unsupported_version_body(apis: Mapping[int, ApiHandler]) -> bytes:
    return kio_codec.encode_response(
        API_KEY, 0, {"error_code": int(ErrorCode.UNSUPPORTED_VERSION), "api_keys": api_keys(apis)}
    )


async def handle(ctx: RequestContext, req: Any) -> ResponseBody | None:
    return kio_codec.encode_response(
        API_KEY, ctx.version, {"error_code": 0, "api_keys": api_keys(ctx.apis), "throttle_time": 0}
    )


HANDLER = ApiHandler(key=API_KEY, min_version=0, max_version=4, handle=handle)
