"""DescribeConfigs (API key 32), versions 1-4: topic and broker configs with their sources (KIP-226, KIP-569).

Runs in a shard process; answered from the metadata image (topic overrides) and the broker's typed config (defaults).
"""

from __future__ import annotations

from typing import Any

from controller.acls import AclOperation
from rafka_shards.model import ErrorCode, topic_name_error
from rafka_shards.protocol import kio_codec
from rafka_shards.shard.authz import AUTHORIZATION_FAILED_MESSAGE
from rafka_shards.shard.kafka.api import ApiHandler, RequestContext, ResponseBody
from rafka_shards.shard.kafka.configs import describe_broker_configs, describe_topic_configs

RESOURCE_TOPIC = 2
RESOURCE_BROKER = 4


async def handle(ctx: RequestContext, req: Any) -> ResponseBody | None:
    image = ctx.manager.image
    with_docs = bool(getattr(req, "include_documentation", False))
    with_synonyms = bool(getattr(req, "include_synonyms", False))
    results = []
    for r in req.resources:
        rtype, rname = int(r.resource_type), str(r.resource_name)
        keys = None if r.configuration_keys is None else [str(k) for k in r.configuration_keys]
        entry: dict[str, Any] = {
            "error_code": 0,
            "error_message": None,
            "resource_type": rtype,
            "resource_name": rname,
            "configs": [],
        }
        if rtype == RESOURCE_TOPIC:
            err = topic_name_error(rname)
            topic = image.topics.get(rname)
            if not ctx.access.topic(AclOperation.DESCRIBE_CONFIGS, rname):  # Kafka checks before anything else
                entry.update(
                    error_code=int(ErrorCode.TOPIC_AUTHORIZATION_FAILED), error_message=AUTHORIZATION_FAILED_MESSAGE
                )
            elif err is not None:
                entry.update(error_code=int(ErrorCode.INVALID_TOPIC_EXCEPTION), error_message=err)
            elif topic is None:
                entry.update(
                    error_code=int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
                    error_message=f"topic {rname!r} does not exist",
                )
            else:
                entry["configs"] = describe_topic_configs(ctx.config, topic.configs, keys, with_documentation=with_docs)
        elif rtype == RESOURCE_BROKER:
            if not ctx.access.cluster(AclOperation.DESCRIBE_CONFIGS):
                entry.update(
                    error_code=int(ErrorCode.CLUSTER_AUTHORIZATION_FAILED), error_message=AUTHORIZATION_FAILED_MESSAGE
                )
            elif rname not in ("", str(ctx.manager.broker_id)):
                entry.update(
                    error_code=int(ErrorCode.INVALID_REQUEST),
                    error_message=f"broker {rname!r} is not this broker ({ctx.manager.broker_id})",
                )
            else:
                entry["configs"] = describe_broker_configs(ctx.config, keys, with_documentation=with_docs)
        else:
            entry.update(
                error_code=int(ErrorCode.INVALID_REQUEST),
                error_message=f"resource type {rtype} is not supported (2 = topic, 4 = broker)",
            )
        if not with_synonyms:
            for c in entry["configs"]:
                c["synonyms"] = []
        results.append(entry)
    return kio_codec.encode_response(32, ctx.version, {"throttle_time": 0, "results": results})


HANDLER = ApiHandler(key=32, min_version=1, max_version=4, handle=handle)
