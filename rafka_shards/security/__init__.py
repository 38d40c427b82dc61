"""Security (issue 18): the sans-IO security cores the shards' Kafka listeners are built on. Today the SASL server
mechanisms (``sasl``: PLAIN and SCRAM-SHA-256 / SCRAM-SHA-512, verified against salted credentials, never a
password); TLS listener settings and ACL authorization are to come, in the same style. No asyncio and no sockets
here: the handlers and the connection shell in ``rafka_shards.shard`` drive these cores."""
