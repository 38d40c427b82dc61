#!/usr/bin/env bash
# Builds a local base image for the Dockerfile (--build-arg BASE=...) from Debian's packages, for a machine that
# reaches Debian's mirror and PyPI but no image registry (the container test, tests/ops/test_container.py, uses it):
# Debian bookworm (minbase) with python3, python3-venv, python3-pip, ca-certificates and python-is-python3, made by
# mmdebstrap and imported into podman. Like the official python image it lets pip install as root (Debian's
# EXTERNALLY-MANAGED marker is removed), and it carries this machine's CA bundle, which pip is told to use
# (/etc/pip.conf), so a build reaches PyPI through a TLS-intercepting proxy when the machine has one. It has no
# Python headers: every dependency has a wheel (a build from source would need python3-dev added to --include).
#   bash ops/container/build-base.sh [IMAGE]     # default IMAGE: localhost/rafka-base:bookworm
# Does nothing when IMAGE exists (remove it to rebuild: podman --storage-driver vfs rmi IMAGE). Root only (mmdebstrap
# and podman as root); takes 30-100 s. Environment: PODMAN, the podman command (default
# "podman --storage-driver vfs", as the test runs it); CA_BUNDLE (default /etc/ssl/certs/ca-certificates.crt).
set -euo pipefail

IMAGE=${1:-localhost/rafka-base:bookworm}
read -r -a PODMAN <<<"${PODMAN:-podman --storage-driver vfs}"
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

for tool in mmdebstrap "${PODMAN[0]}"; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "build-base.sh: $tool is not installed (Debian packages: podman runc mmdebstrap)" >&2
        exit 2
    fi
done

# Two builds at once (two test runs) would both import: the second waits, then finds the image.
exec 9>/tmp/rafka-build-base.lock
flock -w 600 9

if "${PODMAN[@]}" image exists "$IMAGE"; then
    echo "build-base.sh: $IMAGE exists"
    exit 0
fi

echo "build-base.sh: building $IMAGE with mmdebstrap"
# Documentation, manual pages and translations are left out: with podman's vfs storage every layer of an image built
# on this base is a full copy of it. The hooks' "$1" (the new root directory) is for mmdebstrap's shell to expand.
# shellcheck disable=SC2016
mmdebstrap --variant=minbase --quiet \
    --include=python3,python3-venv,python3-pip,ca-certificates,python-is-python3 \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
    --customize-hook="upload $CA_BUNDLE /etc/ssl/certs/ca-certificates.crt" \
    --customize-hook='printf "[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n" >"$1/etc/pip.conf"' \
    bookworm - |
    "${PODMAN[@]}" import --quiet --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$IMAGE" >/dev/null
echo "build-base.sh: $IMAGE built"
