#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian machine with Python 3.11, then runs the checks and the tests.
#   bash ops/test.sh            # everything
#   bash ops/test.sh -k kcat    # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v kcat >/dev/null 2>&1; then
    echo "==> installing kcat (Debian package) for the kcat integration tests"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq kcat
fi

# The monitoring tests (tests/ops) check ops/prometheus/ with promtool and run a real prometheus against a cluster:
# Debian's prometheus package ships both (without its recommended node exporter, which the tests do not use).
if ! command -v promtool >/dev/null 2>&1; then
    echo "==> installing prometheus (Debian package, with promtool) for the monitoring tests"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus
fi

# The chaos tools' tests need ip and nft (network partitions between namespaces, test_chaos_netns.py) and libfuse 3
# with fusermount3 (the power-loss filesystem, test_lazyfs.py); they skip with a reason when these are missing, so
# install them here.
missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v fusermount3 >/dev/null 2>&1 || missing+=(fuse3)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "==> installing ${missing[*]} (Debian packages) for the chaos tests"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

# The container test (tests/ops/test_container.py) builds the Dockerfile with podman, as root, on a base image that
# ops/container/build-base.sh makes with mmdebstrap; it skips when they are missing. Without recommends, podman's
# network backend has to be named (netavark, with iptables for its NAT rules); runc is the runtime the test uses.
missing=()
command -v podman >/dev/null 2>&1 || missing+=(podman netavark iptables)
command -v runc >/dev/null 2>&1 || missing+=(runc)
command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "==> installing ${missing[*]} (Debian packages) for the container test"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

echo "==> installing the package with its [test] extras"
python -m pip install -q -e '.[test]'

echo "==> ruff"
ruff check .
ruff format --check .
echo "==> mypy --strict"
mypy
echo "==> import contracts"
lint-imports
echo "==> hadolint Dockerfile"
hadolint Dockerfile
echo "==> pytest"
python -m pytest -n auto --dist worksteal "$@"
