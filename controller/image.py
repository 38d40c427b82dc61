"""The metadata image: an immutable snapshot of cluster metadata at one log offset (KRaft's MetadataImage).

Runs in every process; pure. Readers hold an image and never see it change; applying a command makes a new image
(copy-on-write of the changed topic or broker only).
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import orjson

from controller.acls import AclDecodeError, Authorizer, bindings_from_json, bindings_to_json
from controller.quotas import QuotaEntity, entity_to_json


@dataclass(frozen=True, slots=True)
class BrokerRegistration:
    broker_id: int
    host: str
    port: int
    rack: str | None
    incarnation: str
    # Lease state, set only by the controller's commands: a fenced broker's lease expired (it leads nothing until it
    # heartbeats again); a broker in maintenance gives up leadership where another in-sync replica can take it;
    # a decommissioning broker gets no new replicas.
    fenced: bool = False
    maintenance: bool = False
    decommissioning: bool = False
    node_id: int | None = None  # the node this broker is a shard of (None: registered before nodes were recorded)
    # KRaft's broker epoch: the metadata offset of this incarnation's RegisterBroker record (-1: registered before
    # epochs were recorded). A replica fetch names it (Fetch v15 replica_epoch) so a leader can refuse an earlier
    # incarnation's fetches.
    epoch: int = -1
    # (listener name, advertised host, port) of each listener (empty: registered before named listeners, and then
    # (host, port) is its address on every listener).
    listeners: tuple[tuple[str, str, int], ...] = ()

    def endpoint(self, listener: str) -> tuple[str, int] | None:
        """Its address for clients of ``listener``; None if it does not serve that listener."""
        if not self.listeners:
            return self.host, self.port
        for name, host, port in self.listeners:
            if name == listener:
                return host, port
        return None

    @property
    def node(self) -> int:
        """What two replicas of one partition may not share: the node, or for an old registration the broker."""
        return self.node_id if self.node_id is not None else -1 - self.broker_id

    @property
    def usable(self) -> bool:
        """May lead partitions and take new replicas."""
        return not (self.fenced or self.maintenance or self.decommissioning)


@dataclass(frozen=True, slots=True)
class PartitionImage:
    partition: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    leader: int
    leader_epoch: int
    partition_epoch: int
    # A reassignment in progress (KRaft's addingReplicas/removingReplicas): ``replicas`` is the union of old and
    # new; it completes, dropping ``removing``, once every replica in ``adding`` is in the ISR.
    adding: tuple[int, ...] = ()
    removing: tuple[int, ...] = ()

    @property
    def target_replicas(self) -> tuple[int, ...]:
        """The replicas once any reassignment in progress completes."""
        return tuple(r for r in self.replicas if r not in self.removing)


@dataclass(frozen=True, slots=True)
class TopicImage:
    name: str
    topic_id: uuid.UUID
    partitions: tuple[PartitionImage, ...]
    configs: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class ScramCredentialRecord:
    """One user's SCRAM credential for one mechanism, as the metadata keeps it (RFC 5802 section 3: salt,
    iterations, StoredKey, ServerKey; never the password). ``mechanism`` is the SASL name; the keys stay out of
    ``repr`` so they do not end up in logs. ``rafka_shards.security.scram_users`` turns it into the SASL core's
    ``ScramCredential``."""

    mechanism: str
    salt: bytes
    iterations: int
    stored_key: bytes = field(repr=False)
    server_key: bytes = field(repr=False)


_EMPTY: Mapping[int, BrokerRegistration] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class MetadataImage:
    offset: int  # offset of the last applied command (-1: none)
    cluster_id: str
    brokers: Mapping[int, BrokerRegistration] = field(default_factory=lambda: _EMPTY)
    topics: Mapping[str, TopicImage] = field(default_factory=lambda: MappingProxyType({}))
    topics_by_id: Mapping[uuid.UUID, str] = field(default_factory=lambda: MappingProxyType({}))
    next_producer_id: int = 0  # the first producer id no broker has been given yet
    # The newest block of producer ids each broker was given: [start, end).
    producer_id_blocks: Mapping[int, tuple[int, int]] = field(default_factory=lambda: MappingProxyType({}))
    # SCRAM credentials by (user, mechanism's SASL name) (KIP-554).
    scram_credentials: Mapping[tuple[str, str], ScramCredentialRecord] = field(
        default_factory=lambda: MappingProxyType({})
    )
    # The key of the made-up SCRAM credentials of users without one, the same on every broker and across restarts
    # so that a user's existence does not show (``rafka_shards.security.sasl``, mock authentication). Empty until
    # the first credential is committed: it is the random bytes that command carried. Never shown by any API.
    scram_mock_secret: bytes = field(default=b"", repr=False)
    # The cluster's ACLs, indexed for decisions; without super users and with allow.everyone.if.no.acl.found off
    # (each shard adds its configuration: ``Authorizer.configured``).
    acls: Authorizer = field(default_factory=Authorizer, repr=False)
    # Client quotas (KIP-546): per entity (sorted (type, name) pairs, name None for a default), key to value.
    client_quotas: Mapping[QuotaEntity, Mapping[str, float]] = field(default_factory=lambda: MappingProxyType({}))


class ImageDecodeError(Exception):
    """Bytes that are not an encoded metadata image."""


IMAGE_FORMAT_VERSION = 1


def encode_image(image: MetadataImage) -> bytes:
    """The image as one JSON document: the Raft snapshot's payload and what a shard starts from."""
    return orjson.dumps(
        {
            "v": IMAGE_FORMAT_VERSION,
            "offset": image.offset,
            "cluster_id": image.cluster_id,
            "brokers": [
                [
                    b.broker_id,
                    b.host,
                    b.port,
                    b.rack,
                    b.incarnation,
                    b.fenced,
                    b.maintenance,
                    b.decommissioning,
                    b.node_id,
                    b.epoch,
                    [list(li) for li in b.listeners],
                ]
                for b in image.brokers.values()
            ],
            "topics": [
                {
                    "name": t.name,
                    "id": str(t.topic_id),
                    "configs": dict(t.configs),
                    "partitions": [
                        [
                            p.partition,
                            list(p.replicas),
                            list(p.isr),
                            p.leader,
                            p.leader_epoch,
                            p.partition_epoch,
                            list(p.adding),
                            list(p.removing),
                        ]
                        for p in t.partitions
                    ],
                }
                for t in image.topics.values()
            ],
            "next_producer_id": image.next_producer_id,
            "producer_id_blocks": [[b, s, e] for b, (s, e) in image.producer_id_blocks.items()],
            "scram_credentials": [
                [user, c.mechanism, _b64(c.salt), c.iterations, _b64(c.stored_key), _b64(c.server_key)]
                for (user, _), c in image.scram_credentials.items()
            ],
            "scram_mock_secret": _b64(image.scram_mock_secret),
            "acls": bindings_to_json(image.acls.bindings),
            "client_quotas": [[entity_to_json(e), dict(values)] for e, values in image.client_quotas.items()],
        }
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _from_b64(v: Any) -> bytes:
    if not isinstance(v, str):
        raise ImageDecodeError("expected base64")
    try:
        return base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError):
        raise ImageDecodeError("expected base64") from None


def _ints(v: Any, n: int | None = None) -> list[int]:
    if not isinstance(v, list) or (n is not None and len(v) != n):
        raise ImageDecodeError("expected a list of integers")
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        raise ImageDecodeError("expected integers")
    return v


def decode_image(data: bytes) -> MetadataImage:
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise ImageDecodeError(f"bad metadata image: {e}") from None
    return image_from_json(body)


def _broker_from_json(b: Any) -> BrokerRegistration:
    # 5: written before leases existed; 8: before node ids were recorded; 9: before broker epochs; 10: before
    # named listeners
    if not isinstance(b, list) or len(b) not in (5, 8, 9, 10, 11):
        raise ImageDecodeError("bad broker registration")
    broker_id, host, port, rack, incarnation = b[:5]
    flags = b[5:8] or [False, False, False]
    node_id = b[8] if len(b) >= 9 else None
    if node_id is not None:
        _ints([node_id])
    epoch = _ints([b[9]])[0] if len(b) >= 10 else -1
    listeners = _listeners_from_json(b[10]) if len(b) == 11 else ()
    if not (isinstance(host, str) and isinstance(incarnation, str) and (rack is None or isinstance(rack, str))):
        raise ImageDecodeError("bad broker registration")
    if not all(isinstance(f, bool) for f in flags):
        raise ImageDecodeError("bad broker flags")
    _ints([broker_id, port])
    fenced, maintenance, decommissioning = flags
    return BrokerRegistration(
        broker_id, host, port, rack, incarnation, fenced, maintenance, decommissioning, node_id, epoch, listeners
    )


def _listeners_from_json(v: Any) -> tuple[tuple[str, str, int], ...]:
    if not isinstance(v, list):
        raise ImageDecodeError("bad broker listeners")
    out = []
    for item in v:
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str) and isinstance(item[1], str)):
            raise ImageDecodeError("bad broker listener")
        out.append((item[0], item[1], _ints([item[2]])[0]))
    return tuple(out)


def _partition_from_json(p: Any) -> PartitionImage:
    if not isinstance(p, list) or len(p) not in (6, 8):  # 6: written before reassignments in progress
        raise ImageDecodeError("bad partition")
    index, replicas, isr, leader, leader_epoch, partition_epoch = p[:6]
    adding, removing = p[6:] or [[], []]
    _ints([index, leader, leader_epoch, partition_epoch])
    return PartitionImage(
        index,
        tuple(_ints(replicas)),
        tuple(_ints(isr)),
        leader,
        leader_epoch,
        partition_epoch,
        tuple(_ints(adding)),
        tuple(_ints(removing)),
    )


def _topic_from_json(t: Any) -> TopicImage:
    configs = t["configs"]
    if not isinstance(t["name"], str) or not isinstance(configs, dict):
        raise ImageDecodeError("bad topic")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in configs.items()):
        raise ImageDecodeError("bad topic configs")
    partitions = tuple(_partition_from_json(p) for p in t["partitions"])
    return TopicImage(t["name"], uuid.UUID(t["id"]), partitions, MappingProxyType(dict(configs)))


def _scram_from_json(c: Any) -> tuple[str, ScramCredentialRecord]:
    if not isinstance(c, list) or len(c) != 6:
        raise ImageDecodeError("bad SCRAM credential")
    user, mechanism, salt, iterations, stored_key, server_key = c
    if not isinstance(user, str) or not isinstance(mechanism, str):
        raise ImageDecodeError("bad SCRAM credential")
    _ints([iterations])
    return user, ScramCredentialRecord(
        mechanism, _from_b64(salt), iterations, _from_b64(stored_key), _from_b64(server_key)
    )


def _quota_from_json(item: Any) -> tuple[QuotaEntity, Mapping[str, float]]:
    if not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], list) or not isinstance(item[1], dict):
        raise ImageDecodeError("bad client quota")
    entity = []
    for pair in item[0]:
        if not isinstance(pair, list) or len(pair) != 2 or not isinstance(pair[0], str):
            raise ImageDecodeError("bad client quota entity")
        if pair[1] is not None and not isinstance(pair[1], str):
            raise ImageDecodeError("bad client quota entity")
        entity.append((pair[0], pair[1]))
    values = {}
    for key, value in item[1].items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ImageDecodeError("bad client quota value")
        values[key] = float(value)
    return tuple(entity), MappingProxyType(values)


def _image_from_json(body: Any) -> MetadataImage:
    """``image_from_json`` without its translation of KeyError, TypeError and ValueError."""
    if not isinstance(body, dict) or body.get("v") != IMAGE_FORMAT_VERSION:
        raise ImageDecodeError("not a metadata image of a known version")
    brokers: dict[int, BrokerRegistration] = {}
    for b in body["brokers"]:
        reg = _broker_from_json(b)
        brokers[reg.broker_id] = reg
    topics: dict[str, TopicImage] = {}
    for t in body["topics"]:
        topic = _topic_from_json(t)
        topics[topic.name] = topic
    blocks = {}
    for item in body["producer_id_blocks"]:
        b, s, e = _ints(item, 3)
        blocks[b] = (s, e)
    offset, next_producer_id = _ints([body["offset"], body["next_producer_id"]])
    cluster_id = body["cluster_id"]
    if not isinstance(cluster_id, str):
        raise ImageDecodeError("bad cluster id")
    scram: dict[tuple[str, str], ScramCredentialRecord] = {}
    for c in body.get("scram_credentials", []):  # absent in images written before SCRAM users
        user, record = _scram_from_json(c)
        scram[(user, record.mechanism)] = record
    try:
        acls = Authorizer(bindings_from_json(body.get("acls", [])))  # absent in images written before ACLs
    except AclDecodeError as e:
        raise ImageDecodeError(f"bad ACLs: {e}") from None
    quotas: dict[QuotaEntity, Mapping[str, float]] = {}
    for item in body.get("client_quotas", []):  # absent in images written before client quotas
        entity, values = _quota_from_json(item)
        quotas[entity] = values
    return MetadataImage(
        offset=offset,
        cluster_id=cluster_id,
        brokers=MappingProxyType(brokers),
        topics=MappingProxyType(topics),
        topics_by_id=MappingProxyType({t.topic_id: t.name for t in topics.values()}),
        next_producer_id=next_producer_id,
        producer_id_blocks=MappingProxyType(blocks),
        scram_credentials=MappingProxyType(scram),
        scram_mock_secret=_from_b64(body.get("scram_mock_secret", "")),
        acls=acls,
        client_quotas=MappingProxyType(quotas),
    )


def image_from_json(body: Any) -> MetadataImage:
    """An image from its parsed JSON (as embedded in a controller channel message)."""
    try:
        return _image_from_json(body)
    except (KeyError, TypeError, ValueError) as e:
        raise ImageDecodeError(f"bad metadata image: {e}") from None
