"""The asyncio shell of a shard: listener, connections, admin HTTP endpoint. Thin: logic lives in the cores."""
