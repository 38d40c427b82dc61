"""The bootstrap user (``bootstrap_user``, Redpanda's ``RP_BOOTSTRAP_USER``): a SCRAM user created when the node
starts unless it exists, so that a cluster whose admin API requires authentication has a first user to log in
with (list it in ``super_users`` to make it the first superuser).

Runs in the controller process, as a task the admin app owns (started and cancelled with it). Every node given the
setting tries; the first creation committed wins and the others find the user there. A user that exists is never
changed: a password changed later through the API or a Kafka client stays. Without a controller leader it retries
every ``BOOTSTRAP_RETRY_S``, at most ``BOOTSTRAP_ATTEMPTS_MAX`` times. The password is logged nowhere.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from controller.raft.node import NotLeader, ProposalDropped
from controller.state_machine import CommandRejected, RejectKind
from rafka_shards.admin.cluster_admin import ClusterAdmin
from rafka_shards.admin.requests import UserPassword
from rafka_shards.security.admin_auth import BootstrapUser

log = logging.getLogger(__name__)

BOOTSTRAP_RETRY_S: Final = 1.0
BOOTSTRAP_ATTEMPTS_MAX: Final = 600  # ten minutes without a controller leader: given up, and said so


async def create_bootstrap_user(cluster: ClusterAdmin, user: BootstrapUser, retry_s: float = BOOTSTRAP_RETRY_S) -> bool:
    """Whether the user exists when it returns (created now, or found)."""
    for _ in range(BOOTSTRAP_ATTEMPTS_MAX):
        if cluster.scram_mechanisms(user.username):
            log.info("bootstrap user %r exists: left as it is", user.username)
            return True
        try:
            await cluster.create_user(UserPassword(user.username, user.password, user.mechanism.value))
        except CommandRejected as e:
            if e.rejection.kind is RejectKind.CONFLICT:
                continue  # created meanwhile: found at the top
            if e.rejection.kind is not RejectKind.CONTROLLER_UNAVAILABLE:
                log.error("bootstrap user %r refused: %s", user.username, e.rejection.message)
                return False
        except (ProposalDropped, NotLeader):
            pass
        else:
            log.info("bootstrap user %r created (%s)", user.username, user.mechanism.value)
            return True
        await asyncio.sleep(retry_s)
    attempts = BOOTSTRAP_ATTEMPTS_MAX
    log.error("bootstrap user %r not created: no controller leader after %d attempts", user.username, attempts)
    return False
