"""``python -m bench chaos``: a Jepsen-style verifier for a local rafka_shards cluster (issue 13).

Runs in the bench's orchestrating process and the client processes it spawns. One module per concern:

- ``schedule``: the seeded fault schedule (sans-IO: the same seed gives the same list of faults);
- ``cluster``: starting, killing, pausing and restarting the nodes of a local 3-node cluster;
- ``faults``: what each fault kind does to the cluster, and how it is healed (pluggable: a kind is a function);
- ``clients``: the idempotent ``acks=all`` producer and the reading consumer processes, writing JSONL histories,
  and the final read of every partition to its high watermark;
- ``replicas``: each node's partition logs read straight from its segment files, for the on-disk comparison;
- ``checker``: the history checker (sans-IO): lost, misplaced, duplicated, reordered, high-watermark regressions,
  replicas that differ, and unavailability per fault;
- ``report``: the summary (JSON, Markdown) and the one-line verdict;
- ``runner``: one seed's run from start to verdict; ``cli``: the ``chaos`` subcommand;
- the fault libraries: ``netns`` (real network partitions: one network namespace per node on a bridge, nftables
  drop sets) and ``lazyfs`` (power loss: a FUSE filesystem under a node's data dir that drops unfsynced writes).
"""
