"""Security (issue 18): the sans-IO security cores the Kafka listeners and the admin API are to be built on: the SASL
server mechanisms (``sasl``: PLAIN and SCRAM-SHA-256 / SCRAM-SHA-512, verified against salted credentials, never a
password), SCRAM users between the metadata image and those mechanisms (``scram_users``: the broker's credential
lookup and the cluster's mock secret, credentials as metadata commands), the SASL state of one connection
(``sasl_session``: Kafka's SaslServerAuthenticator with re-authentication), TLS settings, contexts reloaded when
their files change and certificate principals (``tls``), the ACL authorizer with Kafka's per-API table (``acl``), and
client quota sensors and throttle times (``quota``). No sockets here (``tls`` builds ``ssl`` contexts the asyncio
shells use): the handlers and connection shells drive these cores. Users are managed (AlterUserScramCredentials,
DescribeUserScramCredentials, ``/v1/security/users``), TLS and SASL listeners are served; ACL checks are not wired
into the broker yet."""
