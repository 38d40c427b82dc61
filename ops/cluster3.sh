#!/usr/bin/env bash
# Starts a three-node rafka_shards cluster on one machine, on loopback ports, for trying it out.
#   bash ops/cluster3.sh [DATA_ROOT]      # Ctrl-C stops all three
# Node i: Kafka on 127.0.0.1:(9092 + 100*(i-1)) (broker id 10*i), admin API on 127.0.0.1:(9644 + i - 1),
# Raft on 127.0.0.1:(9193 + i - 1). Each node runs one shard; pass more flags to all nodes with RAFKA_FLAGS.
# RAFKA_PORT_BASE (default 9092) moves every port by the same amount (Kafka base, base+100, base+200; Raft
# base+101..103; admin base+552..554).
set -euo pipefail
root="${1:-rafka-cluster}"
base="${RAFKA_PORT_BASE:-9092}"
voters="1@127.0.0.1:$((base + 101)),2@127.0.0.1:$((base + 102)),3@127.0.0.1:$((base + 103))"
pids=()
trap 'kill -TERM "${pids[@]}" 2>/dev/null; wait' INT TERM EXIT
for i in 1 2 3; do
    # shellcheck disable=SC2086  # RAFKA_FLAGS is a list of flags
    python -m rafka_shards serve --data-dir "$root/node$i" --shards 1 --node-id "$i" --broker-id $((10 * i)) \
        --controller-voters "$voters" --listen "127.0.0.1:$((base + 100 * (i - 1)))" \
        --admin-listen "127.0.0.1:$((base + 552 + i - 1))" ${RAFKA_FLAGS:-} &
    pids+=($!)
done
echo "cluster starting: bootstrap 127.0.0.1:$base,127.0.0.1:$((base + 100)),127.0.0.1:$((base + 200));" \
    "try: curl -s 127.0.0.1:$((base + 552))/v1/controller"
wait
