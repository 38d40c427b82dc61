"""Index 0 of a new controller quorum: the first voters and the starting image.

Runs in the controller process, before its Raft log is opened (``RaftStorage.open`` uses this snapshot only when
the log does not exist yet). The starting image is empty, or the state of a pre-Raft metadata log
(``legacy_upgrade``).
"""

from __future__ import annotations

import uuid

from controller.image import MetadataImage, encode_image
from controller.raft.types import ConfState, Index, NodeId, Snapshot, Term
from rafka_shards.config import BrokerConfig
from rafka_shards.controller_node.legacy_upgrade import has_legacy_log, upgrade_image


def bootstrap_snapshot(config: BrokerConfig, voters: frozenset[NodeId]) -> Snapshot:
    """Index 0 of a new quorum: the first voters and an empty image, or the image of a pre-Raft metadata log."""
    directory = config.data_dir / "controller"
    image = MetadataImage(offset=0, cluster_id=config.cluster_id or default_cluster_id(config, voters))
    if has_legacy_log(directory):
        image = upgrade_image(directory, image)
    return Snapshot(Index(0), Term(0), ConfState(voters), encode_image(image))


def default_cluster_id(config: BrokerConfig, voters: frozenset[NodeId]) -> str:
    if len(voters) == 1 and not config.controller_voters:
        return str(uuid.uuid4())
    # Every first voter must derive the same id without talking to the others.
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "rafka-shards:" + config.controller_voters))
