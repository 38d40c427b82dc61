"""Security (issue 18): the sans-IO security cores the Kafka listeners and the admin API are built on: the SASL
server mechanisms (``sasl``: PLAIN and SCRAM-SHA-256 / SCRAM-SHA-512, verified against salted credentials, never a
password), SCRAM users between the metadata image and those mechanisms (``scram_users``: the broker's credential
lookup and the cluster's mock secret, credentials as metadata commands), the SASL state of one connection
(``sasl_session``: Kafka's SaslServerAuthenticator with re-authentication), the broker's own SASL login to other
brokers (``sasl_client``) and the security of its connections to them (``client_security``), TLS settings, contexts
reloaded when their files change and certificate principals (``tls``), the admin API's authentication and access
rules (``admin_auth``: HTTP Basic against SCRAM credentials, bearer tokens, superusers), and client quota sensors and
throttle times (``quota``). No sockets here (``tls`` builds ``ssl`` contexts the asyncio shells use): the handlers
and connection shells drive these cores. The ACL authorizer and Kafka's per-API table live with the metadata they
decide on, in ``controller.acls``; ``rafka_shards.shard.authz`` applies them to each request. ``audit``: the audit
log's typed events and their bounded JSON lines (its shell is ``rafka_shards.ipc.audit_log``)."""
