"""The Jepsen-style verifier (issue 13) and its fault-injection libraries: real network partitions between nodes in
network namespaces (``bench.chaos.netns``) and power loss under a node's data directory (``bench.chaos.lazyfs``)."""
