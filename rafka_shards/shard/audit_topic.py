"""A shard's writer of the internal audit topic ``_rafka.audit_log`` (issue 18, ``audit_log_to_topic``).

Runs in a shard process. The topic is created on demand, like ``__consumer_offsets``: the first batch finds it missing
and the shard proposes it (``security.audit.audit_topic_request``: one partition, replicated on up to three nodes,
a week's retention). A shard that leads the partition appends each batch itself, through the path an acks=all
Produce takes (the group coordinator writes ``__consumer_offsets`` the same way); any other shard produces it to
the leader over the inter-broker listener (``ipc.audit_log.RemoteAuditTopic``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rafka_shards import event_loop
from rafka_shards.ipc.audit_log import TOPIC_TIMEOUT_S, AuditTopicError, RemoteAuditTopic, audit_batch
from rafka_shards.model import ErrorCode, KafkaError
from rafka_shards.records.batch import validate_batches
from rafka_shards.security.audit import AUDIT_TOPIC, audit_topic_request
from rafka_shards.shard.manager import PartitionManager


class ShardAuditTopic(RemoteAuditTopic):
    def __init__(
        self, manager: PartitionManager, key: bytes, now_ms: Callable[[], int], ready: Callable[[], bool]
    ) -> None:
        client_id = f"rafka-audit-{key.decode()}"
        security = manager.replication.security  # the leader's inter-broker listener, as the replica fetchers
        super().__init__(lambda: manager.image, self._create_topic, key, now_ms, client_id=client_id, security=security)
        self._manager = manager
        self._ready = ready  # the shard serves (registered, caught up): before that, lines wait

    async def _create_topic(self) -> None:
        request = audit_topic_request(self._manager.image)
        try:
            await self._manager.create_topic(
                request.name, request.partitions, request.replication_factor, request.configs
            )
        except KafkaError as e:
            if e.code is not ErrorCode.TOPIC_ALREADY_EXISTS:
                raise AuditTopicError(f"creating {AUDIT_TOPIC}: {e.code.name}") from None

    async def append(self, lines: Sequence[bytes]) -> None:
        if not self._ready():
            raise AuditTopicError("the shard is not serving yet")
        leader, address = await self.leader()
        batch = audit_batch(lines, self._key, self._now_ms())
        if leader != self._manager.broker_id:
            await self.produce(address, batch)
            return
        try:
            p = self._manager.lookup(AUDIT_TOPIC, 0)
            headers = validate_batches(batch, max_batch_bytes=p.log.config.max_message_bytes)
            info = self._manager.append(p, bytearray(batch), headers)
            await event_loop.within(p.wait_high_watermark(info.last_offset), TOPIC_TIMEOUT_S)
        except KafkaError as e:
            raise AuditTopicError(f"appending: {e.code.name}") from None
