# rafka_shards: a Kafka-compatible broker node (a supervisor and one shard process per CPU of the container).
#   docker build -t rafka_shards .
#   docker run --cpus 2 -e RAFKA_SHARDS=2 -p 9092-9093:9092-9093 -p 9644:9644 \
#       -e RAFKA_ADVERTISE=localhost:9092 -v rafka-data:/var/lib/rafka rafka_shards
# Shard i listens on 9092+i and is advertised as RAFKA_ADVERTISE's port + i: publish one port per shard.
# BASE: any Debian-based image with Python 3.11, pip and a `python` command (--build-arg BASE=...): for example the
# one ops/container/build-base.sh makes from Debian's packages when no image registry is reachable (podman: see
# docs/operations.md, Container).
ARG BASE=python:3.11-slim
FROM ${BASE}

# Every dependency has a wheel for CPython 3.11 on Linux x86_64 and aarch64, so no compiler is needed; only if pip
# fails (a dependency it has to build from source) is one installed, and removed in the same layer.
WORKDIR /src
COPY setup.cfg pyproject.toml README.md ./
COPY rafka_shards ./rafka_shards
COPY controller ./controller
# hadolint ignore=DL3008
RUN pip install --no-cache-dir . \
    || { apt-get update \
        && apt-get install -y --no-install-recommends gcc libc6-dev \
        && pip install --no-cache-dir . \
        && apt-get purge -y gcc libc6-dev && apt-get autoremove -y \
        && rm -rf /var/lib/apt/lists/*; } \
    && rm -rf /src

RUN groupadd --system --gid 10001 rafka \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/rafka rafka \
    && mkdir -p /var/lib/rafka && chown 10001:10001 /var/lib/rafka
USER 10001:10001
WORKDIR /var/lib/rafka
VOLUME ["/var/lib/rafka"]

# Listen on all interfaces inside the container; advertise what clients outside can reach (override at run time).
ENV RAFKA_DATA_DIR=/var/lib/rafka \
    RAFKA_LISTEN=0.0.0.0:9092 \
    RAFKA_ADMIN_LISTEN=0.0.0.0:9644 \
    RAFKA_ADVERTISE=localhost:9092
EXPOSE 9092-9099 9644
STOPSIGNAL SIGTERM
# /v1/status/ready is open even when the admin API requires authentication. With RAFKA_ADMIN_SSL_CERT_FILE the port
# speaks HTTPS: the check, on loopback inside the container, does not verify the certificate.
HEALTHCHECK --interval=10s --timeout=3s \
    CMD ["python", "-c", "import os, ssl, urllib.request as u; t = bool(os.environ.get('RAFKA_ADMIN_SSL_CERT_FILE')); u.urlopen(('https' if t else 'http') + '://127.0.0.1:9644/v1/status/ready', context=ssl._create_unverified_context() if t else None)"]
CMD ["python", "-m", "rafka_shards", "serve"]
