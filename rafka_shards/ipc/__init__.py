"""How a node's processes talk: the supervisor's process links, the shard <-> controller channel, and the Kafka client
(``kafka_client``) that shard and controller processes use to call a broker's listener on any node."""
