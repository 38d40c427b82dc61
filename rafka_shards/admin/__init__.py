"""The HTTP admin API (aiohttp) and ``/metrics``, served by every node's controller process."""
