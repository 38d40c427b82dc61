"""The authorized-operations field of group descriptions (DescribeGroups v3+, ConsumerGroupDescribe): with no ACLs
yet, every group operation is allowed."""

from __future__ import annotations

OPERATIONS_NOT_ASKED = -(2**31)  # Kafka's "authorized operations were not requested"
GROUP_OPERATIONS = (1 << 3) | (1 << 6) | (1 << 8)  # READ, DELETE, DESCRIBE (AclOperation codes)
