#!/usr/bin/env bash
# Rolling restart of a rafka_shards cluster: one node at a time, each stopped with a controlled shutdown (SIGTERM:
# its partition and Raft leadership move to the other nodes first), started again, and waited for until it is ready,
# out of maintenance and the cluster has no under-replicated partition; then leadership goes back to the preferred
# replicas. Every wait is bounded (--timeout-s, default 300 s each); exit 1 with the reason on a timeout.
#
#   bash ops/rolling-restart.sh [DATA_ROOT]     # a cluster started by `bash ops/cluster3.sh [DATA_ROOT]`
#   bash ops/rolling-restart.sh --node http://127.0.0.1:9644 'python -m rafka_shards serve ...' --node ...
#
# The first form restarts the three nodes of ops/cluster3.sh with the same flags (same RAFKA_PORT_BASE and
# RAFKA_FLAGS; DATA_ROOT as given to it, default rafka-cluster, relative to the current directory); restarted nodes
# run in the background with their output in DATA_ROOT/127.0.0.1_ADMINPORT.log, no longer children of cluster3.sh (stop them with
# `kill -TERM PID`, the pid in `GET /v1/controller` -> process.pid is the controller's: its parent is the node).
# The second form is ops/rolling_restart.py's (see `python ops/rolling_restart.py --help`): any nodes of this host,
# each with its admin URL and the shell command that starts it again.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python}"
if [[ "${1:-}" == --* ]]; then
    exec "$python" "$here/rolling_restart.py" "$@"
fi
root="${1:-rafka-cluster}"
[[ -d "$root" ]] || { echo "no cluster data in $root (start one with: bash ops/cluster3.sh $root)" >&2; exit 2; }
root="$(cd "$root" && pwd)"
base="${RAFKA_PORT_BASE:-9092}"
voters="1@127.0.0.1:$((base + 101)),2@127.0.0.1:$((base + 102)),3@127.0.0.1:$((base + 103))"
args=(--log-dir "$root")
for i in 1 2 3; do
    cmd="exec $python -m rafka_shards serve --data-dir '$root/node$i' --shards 1 --node-id $i"
    cmd+=" --broker-id $((10 * i)) --controller-voters $voters --listen 127.0.0.1:$((base + 100 * (i - 1)))"
    cmd+=" --admin-listen 127.0.0.1:$((base + 552 + i - 1)) ${RAFKA_FLAGS:-}"
    args+=(--node "http://127.0.0.1:$((base + 552 + i - 1))" "$cmd")
done
exec "$python" "$here/rolling_restart.py" "${args[@]}"
