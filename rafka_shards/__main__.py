"""``python -m rafka_shards``: see ``rafka_shards.cli``."""

from rafka_shards.cli import main

raise SystemExit(main())
