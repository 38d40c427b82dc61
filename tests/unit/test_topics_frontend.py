"""The topics frontend (controller/topics.py): requests to commands, replicas placed, refusals typed with the field
at fault; what both the Kafka handlers and the admin API rely on."""

from __future__ import annotations

import uuid

import pytest

from controller import topics
from controller.commands import (
    AlterTopicConfigs,
    Command,
    CreatePartitions,
    CreateTopic,
    DeleteTopic,
    ReassignPartition,
    RegisterBroker,
    SetBrokerMaintenance,
)
from controller.image import MetadataImage
from controller.state_machine import PARTITIONS_PER_TOPIC_MAX, CommandRejected, RejectKind, apply, validate

TOPIC_ID = uuid.UUID(int=7)


def _image(brokers: int = 3, *commands: Command) -> MetadataImage:
    image = MetadataImage(offset=0, cluster_id="c")
    registrations = [RegisterBroker(b, "127.0.0.1", 9092 + b, None, f"inc-{b}", node_id=b) for b in range(brokers)]
    for cmd in (*registrations, *commands):
        assert validate(image, cmd) is None, cmd
        image = apply(image, cmd, image.offset + 1)
    return image


def _with(image: MetadataImage, *commands: Command) -> MetadataImage:
    for cmd in commands:
        assert validate(image, cmd) is None, cmd
        image = apply(image, cmd, image.offset + 1)
    return image


def _check(e: pytest.ExceptionInfo[topics.TopicRejected], kind: RejectKind, field: str | None) -> None:
    assert isinstance(e.value, CommandRejected)  # the edges map it like any state machine rejection
    assert (e.value.rejection.kind, e.value.field) == (kind, field), e.value


def test_create_places_balanced_replicas_one_per_node() -> None:
    image = _image(3)
    cmd = topics.create_topic(
        image, topics.NewTopic("t", 6, 2, {"retention.ms": "1", "cleanup.policy": "delete"}), TOPIC_ID
    )
    assert isinstance(cmd, CreateTopic) and cmd.topic_id == TOPIC_ID
    assert len(cmd.assignments) == 6 and all(len(set(a)) == 2 for a in cmd.assignments)
    assert sorted(a[0] for a in cmd.assignments) == [0, 0, 1, 1, 2, 2]  # leaders spread evenly
    assert cmd.configs == (("cleanup.policy", "delete"), ("retention.ms", "1"))  # sorted: same request, same command
    assert validate(image, cmd) is None
    assert topics.create_topic(image, topics.NewTopic("t", 6, 2, {}), TOPIC_ID).assignments == cmd.assignments


def test_create_with_given_assignments_takes_them_as_they_are() -> None:
    image = _image(3)
    req = topics.NewTopic("t", -1, -1, {}, assignments=((2, 0), (1, 2)))
    assert topics.create_topic(image, req, TOPIC_ID).assignments == ((2, 0), (1, 2))


@pytest.mark.parametrize(
    ("req", "kind", "field"),
    [
        (topics.NewTopic("a/b", 1, 1, {}), RejectKind.INVALID_TOPIC, "name"),
        (topics.NewTopic("existing", 1, 1, {}), RejectKind.TOPIC_ALREADY_EXISTS, None),
        (topics.NewTopic("existing", 0, 9, {}), RejectKind.TOPIC_ALREADY_EXISTS, None),  # existence first
        (topics.NewTopic("t", 0, 1, {}), RejectKind.INVALID_PARTITIONS, "partitions"),
        (topics.NewTopic("t", PARTITIONS_PER_TOPIC_MAX + 1, 1, {}), RejectKind.INVALID_PARTITIONS, "partitions"),
        (topics.NewTopic("t", 2**31 - 1, 1, {}), RejectKind.INVALID_PARTITIONS, "partitions"),  # never placed
        (topics.NewTopic("t", 1, 0, {}), RejectKind.INVALID_REPLICATION_FACTOR, "replication_factor"),
        (topics.NewTopic("t", 1, 4, {}), RejectKind.INVALID_REPLICATION_FACTOR, "replication_factor"),
    ],
)
def test_create_refusals(req: topics.NewTopic, kind: RejectKind, field: str | None) -> None:
    image = _image(3, CreateTopic("existing", uuid.uuid4(), ((0,),), ()))
    with pytest.raises(topics.TopicRejected) as e:
        topics.create_topic(image, req, TOPIC_ID)
    _check(e, kind, field)


def test_placement_skips_brokers_that_take_no_new_replicas() -> None:
    image = _image(3, SetBrokerMaintenance(0, True))
    cmd = topics.create_topic(image, topics.NewTopic("t", 4, 2, {}), TOPIC_ID)
    assert 0 not in {r for a in cmd.assignments for r in a}
    with pytest.raises(topics.TopicRejected) as e:
        topics.create_topic(image, topics.NewTopic("t", 1, 3, {}), TOPIC_ID)
    _check(e, RejectKind.INVALID_REPLICATION_FACTOR, "replication_factor")
    assert "larger than the 2 node(s)" in e.value.rejection.message


def test_configs_are_left_to_validate_where_the_command_is_proposed() -> None:
    image = _image(1)
    cmd = topics.create_topic(image, topics.NewTopic("t", 1, 1, {"retention.ms": "soon"}), TOPIC_ID)
    rejection = validate(image, cmd)
    assert rejection is not None and rejection.kind is RejectKind.INVALID_CONFIG


def test_create_partitions_places_the_new_ones_with_the_topics_replication_factor() -> None:
    image = _image(3, CreateTopic("t", uuid.uuid4(), ((0, 1), (1, 2)), ()))
    cmd = topics.create_partitions(image, "t", 5)
    assert isinstance(cmd, CreatePartitions) and len(cmd.new_assignments) == 3
    assert all(len(set(a)) == 2 for a in cmd.new_assignments)
    assert validate(image, cmd) is None
    assert topics.create_partitions(image, "t", 3, ((2, 0),)).new_assignments == ((2, 0),)


@pytest.mark.parametrize(
    ("name", "count", "assignments", "kind", "field"),
    [
        ("missing", 3, None, RejectKind.UNKNOWN_TOPIC, None),
        ("t", 2, None, RejectKind.INVALID_PARTITIONS, "partitions"),
        ("t", 1, None, RejectKind.INVALID_PARTITIONS, "partitions"),
        ("t", 2**31 - 1, None, RejectKind.INVALID_PARTITIONS, "partitions"),
        ("t", 4, ((0, 1),), RejectKind.INVALID_REPLICA_ASSIGNMENT, None),
    ],
)
def test_create_partitions_refusals(
    name: str, count: int, assignments: topics.Assignments | None, kind: RejectKind, field: str | None
) -> None:
    image = _image(3, CreateTopic("t", uuid.uuid4(), ((0, 1), (1, 2)), ()))
    with pytest.raises(topics.TopicRejected) as e:
        topics.create_partitions(image, name, count, assignments)
    _check(e, kind, field)


def test_create_partitions_that_cannot_be_placed_name_the_partitions() -> None:
    image = _image(2, CreateTopic("t", uuid.uuid4(), ((0, 1),), ()), SetBrokerMaintenance(1, True))
    with pytest.raises(topics.TopicRejected) as e:
        topics.create_partitions(image, "t", 2)
    _check(e, RejectKind.INVALID_REPLICATION_FACTOR, "partitions")


def test_alter_topic_orders_configs_reassignments_then_new_partitions() -> None:
    image = _image(3, CreateTopic("t", uuid.uuid4(), ((0,), (1,)), (("retention.ms", "5"),)))
    changes = topics.TopicChanges(3, 2, {"segment.ms": "60000"}, ("retention.ms",))
    cmds = topics.alter_topic(image, "t", changes)
    assert cmds[0] == AlterTopicConfigs("t", (("segment.ms", "60000"),), ("retention.ms",))
    assert [type(c) for c in cmds[1:]] == [ReassignPartition, ReassignPartition, CreatePartitions]
    assert all(len(c.replicas) == 2 for c in cmds[1:3] if isinstance(c, ReassignPartition))
    added = cmds[3]
    assert isinstance(added, CreatePartitions) and len(added.new_assignments) == 1
    assert len(added.new_assignments[0]) == 2  # placed with the new replication factor
    for cmd in cmds:
        image = _with(image, cmd)
    assert len(image.topics["t"].partitions) == 3


def test_alter_topic_shrinking_the_replication_factor_keeps_the_leader() -> None:
    image = _image(3, CreateTopic("t", uuid.uuid4(), ((0, 1, 2),), ()))
    (cmd,) = topics.alter_topic(image, "t", topics.TopicChanges(None, 1, {}, ()))
    assert cmd == ReassignPartition("t", 0, (0,))


def test_alter_topic_with_nothing_to_do_gives_no_commands() -> None:
    image = _image(1, CreateTopic("t", uuid.uuid4(), ((0,), (0,)), ()))
    assert topics.alter_topic(image, "t", topics.TopicChanges(2, 1, {}, ())) == ()


@pytest.mark.parametrize(
    ("name", "changes", "kind", "field"),
    [
        ("missing", topics.TopicChanges(5, None, {}, ()), RejectKind.UNKNOWN_TOPIC, None),
        ("t", topics.TopicChanges(1, None, {}, ()), RejectKind.INVALID_PARTITIONS, "partitions"),
        ("t", topics.TopicChanges(None, 5, {}, ()), RejectKind.INVALID_REPLICATION_FACTOR, "replication_factor"),
        ("t", topics.TopicChanges(None, None, {"retention.ms": "soon"}, ()), RejectKind.INVALID_CONFIG, None),
    ],
)
def test_alter_topic_refusals_propose_nothing(
    name: str, changes: topics.TopicChanges, kind: RejectKind, field: str | None
) -> None:
    image = _image(3, CreateTopic("t", uuid.uuid4(), ((0,), (1,)), ()))
    with pytest.raises(topics.TopicRejected) as e:
        topics.alter_topic(image, name, changes)
    _check(e, kind, field)


def test_delete_topic() -> None:
    image = _image(1, CreateTopic("t", uuid.uuid4(), ((0,),), ()))
    assert topics.delete_topic(image, "t") == DeleteTopic("t")
    with pytest.raises(topics.TopicRejected) as e:
        topics.delete_topic(image, "missing")
    _check(e, RejectKind.UNKNOWN_TOPIC, None)


def test_plan_takes_every_kind_of_request() -> None:
    image = _image(2, CreateTopic("t", uuid.uuid4(), ((0,),), ()))
    (created,) = topics.plan(image, topics.NewTopic("u", 2, 2, {}), TOPIC_ID)
    assert isinstance(created, CreateTopic) and created.topic_id == TOPIC_ID and len(created.assignments) == 2
    (grown,) = topics.plan(image, topics.NewPartitions("t", 3), TOPIC_ID)
    assert isinstance(grown, CreatePartitions) and len(grown.new_assignments) == 2
    changes = topics.TopicChanges(None, None, {"retention.ms": "1"}, ())
    assert topics.plan(image, topics.AlterTopic("t", changes), TOPIC_ID) == (
        AlterTopicConfigs("t", (("retention.ms", "1"),), ()),
    )
    assert topics.plan(image, topics.RemoveTopic("t"), TOPIC_ID) == (DeleteTopic("t"),)


def test_check_validates_each_command_on_the_image_the_ones_before_it_make() -> None:
    """What ``validate_only`` answers: configs and given assignments are checked (plan leaves them to validate), and
    each command on the image the earlier ones leave, so a later command that depends on an earlier one passes."""
    image = _image(2, CreateTopic("t", uuid.uuid4(), ((0,),), ()))
    bad_config = topics.plan(image, topics.NewTopic("u", 1, 1, {"retention.ms": "soon"}), TOPIC_ID)
    with pytest.raises(topics.TopicRejected) as e:
        topics.check(image, bad_config)
    _check(e, RejectKind.INVALID_CONFIG, None)
    unknown_broker = topics.plan(image, topics.NewTopic("u", 0, 0, {}, ((0, 9),)), TOPIC_ID)
    with pytest.raises(topics.TopicRejected) as e:
        topics.check(image, unknown_broker)
    assert e.value.rejection.kind in (RejectKind.UNKNOWN_BROKER, RejectKind.INVALID_REPLICA_ASSIGNMENT)
    grow = topics.plan(image, topics.AlterTopic("t", topics.TopicChanges(3, 2, {}, ())), TOPIC_ID)
    assert [type(c) for c in grow] == [ReassignPartition, CreatePartitions]
    topics.check(image, grow)  # the new partitions have two replicas: valid only after the reassignment
    topics.check(image, ())
