"""``python -m rafka_shards``: see ``rafka_shards.cli``."""

from rafka_shards.cli import main

# Guarded: shard processes are spawned, and spawn imports the parent's main module (as ``__mp_main__``) in the child.
if __name__ == "__main__":
    raise SystemExit(main())
