"""One module per Kafka API; each ends with ``HANDLER = ApiHandler(key, min_version, max_version, handle)``."""
