"""What the admin API and ``/metrics`` know of consumer groups: asked of the group coordinators with Kafka requests.

Runs in the controller process. Groups live in the shards that lead partitions of ``__consumer_offsets`` (on any
node), so this module is a Kafka admin client over loopback: ListGroups to every broker, DescribeGroups and
OffsetFetch to a group's coordinator (the leader of ``partition_for(group)``), DeleteGroups there, and the high
watermarks for the lag from each partition's leader (this node's shards over the controller channel, other brokers
with ListOffsets, one request per broker), each over the brokers' inter-broker listener with its security
(``security``: TLS, a SASL login). Every call has a timeout; a broker that does not answer is reported, not
waited for.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kio.schema.delete_groups.v2.request import DeleteGroupsRequest
from kio.schema.delete_groups.v2.response import DeleteGroupsResponse
from kio.schema.describe_groups.v5.request import DescribeGroupsRequest
from kio.schema.describe_groups.v5.response import DescribeGroupsResponse
from kio.schema.list_groups.v4.request import ListGroupsRequest
from kio.schema.list_groups.v4.response import ListGroupsResponse
from kio.schema.list_offsets.v1.request import ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic
from kio.schema.list_offsets.v1.response import ListOffsetsResponse
from kio.schema.offset_fetch.v7.request import OffsetFetchRequest
from kio.schema.offset_fetch.v7.response import OffsetFetchResponse
from kio.schema.offset_fetch.v8.request import OffsetFetchRequest as OffsetFetchRequestV8
from kio.schema.offset_fetch.v8.request import OffsetFetchRequestGroup
from kio.schema.offset_fetch.v8.response import OffsetFetchResponse as OffsetFetchResponseV8
from kio.schema.types import BrokerId, GroupId, TopicName
from kio.static.primitive import i32, i64

from controller.image import MetadataImage
from rafka_shards import event_loop
from rafka_shards.groups.offsets_records import partition_for
from rafka_shards.ipc.channel import Stats
from rafka_shards.ipc.kafka_client import KafkaClient, KafkaClientError
from rafka_shards.model import OFFSETS_TOPIC, ErrorCode
from rafka_shards.security.client_security import ClientSecurity

GROUP_CALL_TIMEOUT_S = 5.0
GROUP_RESPONSE_BYTES_MAX = 64 * 1024 * 1024  # a DescribeGroups of a large group carries every member's metadata
GROUPS_LISTED_MAX = 100_000  # groups one listing returns (the rest are left out and counted)
GROUP_METRICS_PER_SHARD_MAX = 1000  # groups of one shard that /metrics describes (bounds a scrape's cost)
_LATEST = -1


class GroupsUnavailable(Exception):
    """The group's coordinator could not be asked (no offsets topic, no leader, no answer)."""


@dataclass(frozen=True, slots=True)
class Coordinator:
    broker_id: int
    host: str
    port: int


def coordinator(image: MetadataImage, group_id: str) -> Coordinator:
    topic = image.topics.get(OFFSETS_TOPIC)
    if topic is None:
        raise GroupsUnavailable(f"{OFFSETS_TOPIC} does not exist yet: no group has been used")
    leader = topic.partitions[partition_for(group_id, len(topic.partitions))].leader
    reg = image.brokers.get(leader)
    if reg is None or reg.fenced:
        raise GroupsUnavailable(f"the coordinator of group {group_id!r} has no live leader")
    return Coordinator(reg.broker_id, reg.host, reg.port)


async def _ask(host: str, port: int, request: Any, response_type: Any, security: ClientSecurity) -> Any:
    async def call() -> Any:
        client = await KafkaClient.connect(
            host, port, client_id="rafka-admin", response_bytes_max=GROUP_RESPONSE_BYTES_MAX, security=security
        )
        try:
            return await client.request(request, response_type)
        finally:
            client.close()

    try:
        return await event_loop.within(call(), GROUP_CALL_TIMEOUT_S)
    except (KafkaClientError, TimeoutError) as e:
        raise GroupsUnavailable(f"broker {host}:{port} did not answer: {e}") from e


async def list_groups(
    image: MetadataImage, security: ClientSecurity, broker_ids: Iterable[int] | None = None
) -> dict[str, Any]:
    """Every group of the cluster (or of ``broker_ids``), with the brokers that could not be asked."""
    brokers = [b for b in image.brokers.values() if not b.fenced and (broker_ids is None or b.broker_id in broker_ids)]
    answers = await asyncio.gather(
        *(_ask(b.host, b.port, ListGroupsRequest(states_filter=()), ListGroupsResponse, security) for b in brokers),
        return_exceptions=True,
    )
    groups: list[dict[str, Any]] = []
    errors: list[str] = []
    for b, answer in zip(brokers, answers, strict=True):
        if isinstance(answer, BaseException):
            if not isinstance(answer, GroupsUnavailable):
                raise answer
            errors.append(str(answer))
            continue
        if answer.error_code != 0:
            errors.append(f"broker {b.broker_id}: {ErrorCode(int(answer.error_code)).name}")
        for g in answer.groups:
            groups.append(
                {
                    "group_id": str(g.group_id),
                    "protocol_type": str(g.protocol_type),
                    "state": str(g.group_state),
                    "coordinator": b.broker_id,
                }
            )
    groups.sort(key=lambda g: g["group_id"])
    return {
        "groups": groups[:GROUPS_LISTED_MAX],
        "truncated": max(0, len(groups) - GROUPS_LISTED_MAX),
        "errors": errors,
    }


async def describe_group(
    image: MetadataImage, group_id: str, local: Mapping[int, Stats], local_brokers: set[int], security: ClientSecurity
) -> dict[str, Any] | None:
    """A group's state, members and, per partition it committed, the committed offset, log end and lag. None for a
    group that does not exist."""
    c = coordinator(image, group_id)
    request = DescribeGroupsRequest(groups=(GroupId(group_id),), include_authorized_operations=False)
    described = (await _ask(c.host, c.port, request, DescribeGroupsResponse, security)).groups[0]
    _check(int(described.error_code), group_id)
    fetched = await _ask(
        c.host, c.port, OffsetFetchRequest(group_id=GroupId(group_id), topics=None), OffsetFetchResponse, security
    )
    _check(int(fetched.error_code), group_id)
    committed = {
        (str(t.name), int(p.partition_index)): (int(p.committed_offset), str(p.metadata))
        for t in fetched.topics
        for p in t.partitions
        if p.error_code == 0 and p.committed_offset >= 0
    }
    if described.group_state == "Dead" and not committed:
        return None
    ends = await high_watermarks(image, committed, local, local_brokers, security)
    return {
        "group_id": group_id,
        "state": str(described.group_state),
        "protocol_type": str(described.protocol_type),
        "protocol": str(described.protocol_data),
        "coordinator": c.broker_id,
        "members": [_member_json(m, str(described.protocol_type)) for m in described.members],
        "offsets": [
            {
                "topic": t,
                "partition": p,
                "committed_offset": offset,
                "metadata": metadata,
                "log_end_offset": ends.get((t, p)),
                "lag": None if (t, p) not in ends else max(0, ends[(t, p)] - offset),
            }
            for (t, p), (offset, metadata) in sorted(committed.items())
        ],
    }


def _check(code: int, group_id: str) -> None:
    if code != 0:
        raise GroupsUnavailable(f"group {group_id!r}: {ErrorCode(code).name}")


def _member_json(m: Any, protocol_type: str) -> dict[str, Any]:
    assignment = bytes(m.member_assignment)
    return {
        "member_id": str(m.member_id),
        "group_instance_id": m.group_instance_id,
        "client_id": str(m.client_id),
        "client_host": str(m.client_host),
        "assignment": consumer_assignment(assignment) if protocol_type == "consumer" else None,
        "assignment_bytes": len(assignment),
    }


def consumer_assignment(data: bytes) -> dict[str, list[int]] | None:
    """A ConsumerProtocolAssignment (version, then [topic, [partition]]) as {topic: partitions}; None if unreadable."""
    if not data:
        return {}
    try:
        pos = 2
        (topics,) = struct.unpack_from(">i", data, pos)
        pos += 4
        out: dict[str, list[int]] = {}
        for _ in range(min(topics, len(data))):
            (n,) = struct.unpack_from(">h", data, pos)
            pos += 2
            name = data[pos : pos + n].decode()
            pos += n
            (count,) = struct.unpack_from(">i", data, pos)
            pos += 4
            out[name] = list(struct.unpack_from(f">{max(count, 0)}i", data, pos))
            pos += 4 * max(count, 0)
        return out
    except (struct.error, UnicodeDecodeError, ValueError):
        return None


async def high_watermarks(
    image: MetadataImage,
    partitions: Iterable[tuple[str, int]],
    local: Mapping[int, Stats],
    local_brokers: set[int],
    security: ClientSecurity,
) -> dict[tuple[str, int], int]:
    """The high watermark of each partition, from this node's shards when they lead it, else from its leader with
    one ListOffsets request per broker. Partitions whose leader does not answer are left out."""
    served = {(ps.topic, ps.partition): ps.high_watermark for st in local.values() for ps in st.partitions}
    out: dict[tuple[str, int], int] = {}
    by_leader: dict[int, list[tuple[str, int]]] = {}
    for tp in partitions:
        t = image.topics.get(tp[0])
        if t is None or not 0 <= tp[1] < len(t.partitions) or t.partitions[tp[1]].leader < 0:
            continue
        if tp in served:
            out[tp] = served[tp]
        elif t.partitions[tp[1]].leader not in local_brokers:
            by_leader.setdefault(t.partitions[tp[1]].leader, []).append(tp)
    answers = await asyncio.gather(
        *(_leader_ends(image, b, tps, security) for b, tps in by_leader.items()), return_exceptions=True
    )
    for answer in answers:
        if isinstance(answer, dict):
            out.update(answer)
        elif not isinstance(answer, GroupsUnavailable):
            raise answer
    return out


async def _leader_ends(
    image: MetadataImage, broker_id: int, tps: list[tuple[str, int]], security: ClientSecurity
) -> dict[tuple[str, int], int]:
    reg = image.brokers.get(broker_id)
    if reg is None:
        return {}
    topics: dict[str, list[int]] = {}
    for t, p in tps:
        topics.setdefault(t, []).append(p)
    request = ListOffsetsRequest(
        replica_id=BrokerId(-1),
        topics=tuple(
            ListOffsetsTopic(
                name=TopicName(t),
                partitions=tuple(ListOffsetsPartition(partition_index=i32(p), timestamp=i64(_LATEST)) for p in ps),
            )
            for t, ps in topics.items()
        ),
    )
    resp = await _ask(reg.host, reg.port, request, ListOffsetsResponse, security)
    return {
        (str(t.name), int(p.partition_index)): int(p.offset)
        for t in resp.topics
        for p in t.partitions
        if p.error_code == 0
    }


async def delete_group(image: MetadataImage, group_id: str, security: ClientSecurity) -> ErrorCode:
    c = coordinator(image, group_id)
    request = DeleteGroupsRequest(groups_names=(GroupId(group_id),))
    resp = await _ask(c.host, c.port, request, DeleteGroupsResponse, security)
    return ErrorCode(int(resp.results[0].error_code))


@dataclass(frozen=True, slots=True)
class GroupMetrics:
    """What ``/metrics`` shows of the groups this node's shards coordinate."""

    states: dict[str, str]  # group -> state
    members: dict[str, int]
    committed: dict[tuple[str, str, int], int]  # (group, topic, partition) -> committed offset
    lag: dict[tuple[str, str, int], int]


async def group_metrics(
    image: MetadataImage, local: Mapping[int, Stats], local_brokers: set[int], security: ClientSecurity
) -> GroupMetrics:
    """States, member counts, committed offsets and lag of the groups coordinated on this node: per local shard one
    ListGroups, one DescribeGroups and one OffsetFetch (v8, every group at once), and the high watermarks. At most
    ``GROUP_METRICS_PER_SHARD_MAX`` groups per shard; a shard that does not answer is left out of this scrape."""
    out = GroupMetrics({}, {}, {}, {})
    brokers = [image.brokers[b] for b in sorted(local_brokers) if b in image.brokers]
    answers = await asyncio.gather(*(_shard_groups(b.host, b.port, security) for b in brokers), return_exceptions=True)
    for answer in answers:
        if isinstance(answer, GroupMetrics):
            out.states.update(answer.states)
            out.members.update(answer.members)
            out.committed.update(answer.committed)
        elif not isinstance(answer, GroupsUnavailable):
            raise answer
    ends = await high_watermarks(image, {(t, p) for _, t, p in out.committed}, local, local_brokers, security)
    for (g, t, p), offset in out.committed.items():
        if (t, p) in ends:
            out.lag[(g, t, p)] = max(0, ends[(t, p)] - offset)
    return out


async def _shard_groups(host: str, port: int, security: ClientSecurity) -> GroupMetrics:
    listed = await _ask(host, port, ListGroupsRequest(states_filter=()), ListGroupsResponse, security)
    ids = [GroupId(str(g.group_id)) for g in listed.groups][:GROUP_METRICS_PER_SHARD_MAX]
    out = GroupMetrics({}, {}, {}, {})
    if not ids:
        return out
    described = await _ask(
        host,
        port,
        DescribeGroupsRequest(groups=tuple(ids), include_authorized_operations=False),
        DescribeGroupsResponse,
        security,
    )
    for d in described.groups:
        if d.error_code == 0:
            out.states[str(d.group_id)] = str(d.group_state)
            out.members[str(d.group_id)] = len(d.members)
    request = OffsetFetchRequestV8(groups=tuple(OffsetFetchRequestGroup(group_id=g, topics=None) for g in ids))
    fetched = await _ask(host, port, request, OffsetFetchResponseV8, security)
    for g in fetched.groups:
        for t in g.topics if g.error_code == 0 else ():
            for p in t.partitions:
                if p.error_code == 0 and p.committed_offset >= 0:
                    out.committed[(str(g.group_id), str(t.name), int(p.partition_index))] = int(p.committed_offset)
    return out
