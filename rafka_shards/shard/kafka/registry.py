"""Every Kafka API this broker serves, collected from the handler modules' own declarations.

ApiVersions answers from ``HANDLERS``; the connection routes by it. Adding an API = adding a handler module here.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from rafka_shards.shard.kafka.api import ApiHandler
from rafka_shards.shard.kafka.handlers import (
    alter_client_quotas,
    alter_user_scram_credentials,
    api_versions,
    consumer_group_describe,
    consumer_group_heartbeat,
    create_acls,
    create_partitions,
    create_topics,
    delete_acls,
    delete_groups,
    delete_topics,
    describe_acls,
    describe_client_quotas,
    describe_cluster,
    describe_configs,
    describe_groups,
    describe_user_scram_credentials,
    fetch,
    find_coordinator,
    heartbeat,
    init_producer_id,
    join_group,
    leave_group,
    list_groups,
    list_offsets,
    metadata,
    offset_commit,
    offset_delete,
    offset_fetch,
    offset_for_leader_epoch,
    produce,
    sasl_authenticate,
    sasl_handshake,
    sync_group,
)

_ALL = (
    produce.HANDLER,
    fetch.HANDLER,
    list_offsets.HANDLER,
    metadata.HANDLER,
    offset_for_leader_epoch.HANDLER,
    api_versions.HANDLER,
    sasl_handshake.HANDLER,
    sasl_authenticate.HANDLER,
    create_topics.HANDLER,
    delete_topics.HANDLER,
    describe_configs.HANDLER,
    describe_acls.HANDLER,
    create_acls.HANDLER,
    delete_acls.HANDLER,
    create_partitions.HANDLER,
    describe_cluster.HANDLER,
    describe_user_scram_credentials.HANDLER,
    alter_user_scram_credentials.HANDLER,
    describe_client_quotas.HANDLER,
    alter_client_quotas.HANDLER,
    init_producer_id.HANDLER,
    consumer_group_heartbeat.HANDLER,
    consumer_group_describe.HANDLER,
    delete_groups.HANDLER,
    describe_groups.HANDLER,
    find_coordinator.HANDLER,
    heartbeat.HANDLER,
    join_group.HANDLER,
    leave_group.HANDLER,
    list_groups.HANDLER,
    offset_commit.HANDLER,
    offset_delete.HANDLER,
    offset_fetch.HANDLER,
    sync_group.HANDLER,
)

HANDLERS: Mapping[int, ApiHandler] = MappingProxyType({h.key: h for h in _ALL})
assert len(HANDLERS) == len(_ALL), "two handlers declare the same API key"
