"""The authorized-operations field of group descriptions (DescribeGroups v3+, ConsumerGroupDescribe): the bit field
of the group operations (Kafka's AclEntry.supportedOperations(GROUP)) the principal may do; every one when ACLs are
not enforced (``rafka_shards.shard.authz.Access.authorized_operations`` computes it per group)."""

from __future__ import annotations

OPERATIONS_NOT_ASKED = -(2**31)  # Kafka's "authorized operations were not requested"
GROUP_OPERATION_CODES = (3, 6, 8)  # READ, DELETE, DESCRIBE (AclOperation codes)
GROUP_OPERATIONS = sum(1 << code for code in GROUP_OPERATION_CODES)
