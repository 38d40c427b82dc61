"""The HTTP admin API (aiohttp) and ``/metrics``, served by every node's controller process.

``routes/`` holds one module per resource, each with its route table; ``app`` serves them, ``http`` maps failures to
statuses, ``views`` shapes the image as JSON, ``cluster_admin`` makes changes, ``metrics`` renders Prometheus text.
What it needs of the controller process is declared in ``ports`` as Protocols; it imports nothing of
``rafka_shards.controller_node``.
"""
