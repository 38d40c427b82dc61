"""How a node's processes talk: the supervisor's process links and the shard <-> controller channel."""
