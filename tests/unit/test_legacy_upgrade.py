"""The first snapshot of a new quorum (controller_node/bootstrap.py), and the upgrade of a pre-Raft metadata log
into it (controller_node/legacy_upgrade.py)."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson

from controller.commands import CreateTopic, RegisterBroker
from controller.image import decode_image
from controller.metadata_log import MetadataLog
from controller.raft.types import NodeId
from rafka_shards.config import BrokerConfig
from rafka_shards.controller_node.bootstrap import bootstrap_snapshot

VOTERS = frozenset({NodeId(1)})


def test_a_new_quorum_starts_from_an_empty_image_at_index_0(tmp_path: Path) -> None:
    snap = bootstrap_snapshot(BrokerConfig(data_dir=tmp_path, cluster_id="given"), VOTERS)
    image = decode_image(snap.data)
    assert (snap.index, snap.term, snap.conf.voters) == (0, 0, VOTERS)
    assert (image.offset, image.cluster_id, image.brokers, image.topics) == (0, "given", {}, {})


def test_voters_of_one_quorum_derive_the_same_cluster_id(tmp_path: Path) -> None:
    voters = "1@127.0.0.1:9001,2@127.0.0.1:9002"
    ids = {
        decode_image(
            bootstrap_snapshot(
                BrokerConfig(data_dir=tmp_path / str(n), node_id=n, controller_voters=voters), VOTERS
            ).data
        ).cluster_id
        for n in (1, 2)
    }
    assert len(ids) == 1


def test_a_pre_raft_metadata_log_becomes_the_starting_image(tmp_path: Path) -> None:
    directory = tmp_path / "controller"
    old = MetadataLog.open(directory)
    old.append(RegisterBroker(0, "127.0.0.1", 9092, None, "inc"))
    old.append(CreateTopic("orders", uuid.uuid4(), ((0,),), ()))
    old.close()
    (directory / "cluster.json").write_bytes(orjson.dumps({"cluster_id": "old-cluster"}))
    image = decode_image(bootstrap_snapshot(BrokerConfig(data_dir=tmp_path, cluster_id="ignored"), VOTERS).data)
    assert (image.offset, image.cluster_id) == (0, "old-cluster")
    assert list(image.brokers) == [0] and list(image.topics) == ["orders"]
    assert (directory / "metadata.log").exists()  # only read
