"""The container image for real: the repository's Dockerfile built with podman on a base image made here from
Debian's packages (ops/container/build-base.sh), then a three-node cluster of containers on a podman network of the
test's own, served to confluent-kafka on the host. One node is stopped the way a container runtime stops it
(``podman stop``: SIGTERM to PID 1, the node's supervisor), which must end in exit 0 with nothing lost while the other
two keep serving acks=all writes; started again, it rejoins every ISR.

Runs as root where podman, runc and mmdebstrap are installed (``bash ops/test.sh`` installs them), skips with the
reason elsewhere. podman runs with the options that work on these machines: the vfs storage driver, runc, and
rlimits below the host's (raising them is refused). The image is built with ``--layers=false``: with vfs every
cached layer is a full copy of the image, which made a build with layers several times slower than one without; an
image built from the same inputs (a digest of the build context and the base) is reused instead.

The network is ``--internal`` (no route out, no NAT) with a subnet ``10.198.<k>.0/24`` that exists only on its bridge;
the host reaches the containers' addresses through that bridge, and each node advertises its own address, which both
the host's clients and the other nodes dial. Everything the test creates carries the label ``rafka-container-test``
with the pytest process id; a later run removes what a killed run left behind.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from bench.chaos.cluster import wait_gone
from tests.integration.helpers import admin_call

pytestmark = [pytest.mark.integration, pytest.mark.container, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
PODMAN = ["podman", "--storage-driver", "vfs", "--runtime", "runc"]
BUILD_ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
RUN_ULIMITS = ["--ulimit", "nofile=16384:16384", "--ulimit", "nproc=4096:4096"]
BASE_IMAGE = "localhost/rafka-base:bookworm"
IMAGE_REPO = "localhost/rafka_shards"
LABEL = "rafka-container-test"
# What the Dockerfile copies, besides the packages' directories (.dockerignore keeps __pycache__ out).
BUILD_FILES = ("Dockerfile", ".dockerignore", "setup.cfg", "pyproject.toml", "README.md")
BUILD_DIRS = ("rafka_shards", "controller")

NODES = 3
PARTITIONS = 3
MESSAGES = 300  # per phase: before the stop, while one node is stopped
KAFKA_PORT, ADMIN_PORT, RAFT_PORT = 9092, 9644, 9645
# Generous bounds: a busy 2-core machine builds, starts three nodes of three processes each, and runs other tests.
BASE_TIMEOUT_S = 900.0
BUILD_TIMEOUT_S = 900.0
COMMAND_TIMEOUT_S = 180.0
READY_TIMEOUT_S = 240.0
WAIT_S = 120.0
STOP_TIMEOUT_S = 75  # podman stop's grace before SIGKILL: as under systemd (docs/operations.md, Container)


def _missing_tools() -> str | None:
    if os.geteuid() != 0:
        return "the container test runs podman as root"
    missing = [tool for tool in ("podman", "runc", "mmdebstrap", "ip") if shutil.which(tool) is None]
    if missing:
        return (
            f"{', '.join(missing)} not installed (Debian: podman runc mmdebstrap iproute2; ops/test.sh installs them)"
        )
    return None


def podman(*args: str, timeout: float = COMMAND_TIMEOUT_S, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited with {proc.returncode}:\n{proc.stderr[-5000:]}")
    return proc


def wait_for(what: str, check: Callable[[], bool], timeout_s: float, details: Callable[[], str] | None = None) -> float:
    """Seconds until ``check()`` holds, polling every 0.25 s; fails with ``details()`` after ``timeout_s``."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"{what}: not within {timeout_s:.0f} s\n{details() if details else ''}")
        time.sleep(0.25)
    return time.monotonic() - start


# ---- images ---------------------------------------------------------------------------------------------------------


def build_base() -> None:
    """The local base image (nothing to do when it exists; 30-100 s otherwise, by how busy the machine is)."""
    env = {**os.environ, "PODMAN": " ".join(PODMAN)}
    proc = subprocess.run(
        ["bash", str(ROOT / "ops/container/build-base.sh"), BASE_IMAGE],
        capture_output=True,
        text=True,
        timeout=BASE_TIMEOUT_S,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, (
        f"build-base.sh exited with {proc.returncode}:\n{proc.stdout[-3000:]}{proc.stderr[-5000:]}"
    )


def build_digest(base_id: str) -> str:
    """A digest of everything the build reads: the base image's id and the files the Dockerfile copies."""
    h = hashlib.sha256(base_id.encode())
    paths = [ROOT / name for name in BUILD_FILES]
    for directory in BUILD_DIRS:
        paths += sorted(p for p in (ROOT / directory).rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for path in paths:
        h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def build_image() -> str:
    """The image built from this work tree on the local base: reused when one was built from the same inputs."""
    base_id = podman("image", "inspect", "--format", "{{.Id}}", BASE_IMAGE).stdout.strip()
    image = f"{IMAGE_REPO}:test-{build_digest(base_id)}"
    if podman("image", "exists", image, check=False).returncode == 0:
        return image
    podman(
        "build",
        "--layers=false",
        "--pull=never",
        *BUILD_ULIMITS,
        "--build-arg",
        f"BASE={BASE_IMAGE}",
        "--tag",
        image,
        str(ROOT),
        timeout=BUILD_TIMEOUT_S,
    )
    # Earlier test images (vfs: each a full copy) go; one that a running test's containers use stays.
    listed = podman("images", "--format", "{{.Repository}}:{{.Tag}}", "--filter", f"reference={IMAGE_REPO}").stdout
    for old in listed.split():
        if old != image and old.startswith(f"{IMAGE_REPO}:test-"):
            podman("rmi", old, check=False)
    return image


# ---- leftovers and the network --------------------------------------------------------------------------------------


def remove_leftovers() -> None:
    """Containers and networks of earlier runs whose pytest process is gone (a run killed before its cleanup)."""

    def dead(owner: str) -> bool:
        return not (owner.isdigit() and psutil.pid_exists(int(owner)))

    listed = podman(
        "ps", "-a", "--filter", f"label={LABEL}", "--format", f'{{{{.Names}}}} {{{{index .Labels "{LABEL}"}}}}'
    )
    stale = [
        name for name, owner in (line.split() for line in listed.stdout.splitlines() if line.strip()) if dead(owner)
    ]
    if stale:
        podman("rm", "--force", "--volumes", "--time", "10", *stale, check=False)
    for network in json.loads(podman("network", "ls", "--format", "json").stdout or "[]"):
        owner = (network.get("labels") or {}).get(LABEL)
        if owner is not None and dead(owner):
            podman("network", "rm", "--force", network["name"], check=False)


def used_networks() -> list[ipaddress.IPv4Network]:
    """IPv4 networks the machine already has: routes, addresses, and every podman network's subnets."""
    used: list[ipaddress.IPv4Network] = []
    for argv in (["ip", "-4", "route", "show", "table", "all"], ["ip", "-4", "-o", "addr", "show"]):
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout
        for match in re.finditer(r"\b(\d+\.\d+\.\d+\.\d+(?:/\d+)?)\b", out):
            with_prefix = match.group(1)
            used.append(ipaddress.IPv4Network(with_prefix, strict=False))
    for network in json.loads(podman("network", "ls", "--format", "json").stdout or "[]"):
        for subnet in network.get("subnets") or []:
            net = ipaddress.ip_network(subnet["subnet"], strict=False)
            if isinstance(net, ipaddress.IPv4Network):
                used.append(net)
    return used


def free_subnet(tag: str) -> ipaddress.IPv4Network:
    """``10.198.<k>.0/24`` with ``k`` from the run's tag, skipping any that overlaps a network the machine has."""
    used = [n for n in used_networks() if n.prefixlen > 0]  # the default route overlaps everything
    start = int(tag, 16) % 256
    for step in range(256):
        candidate = ipaddress.IPv4Network(f"10.198.{(start + step) % 256}.0/24")
        if not any(candidate.overlaps(n) for n in used):
            return candidate
    raise AssertionError("no free 10.198.<k>.0/24 subnet")


# ---- the cluster ----------------------------------------------------------------------------------------------------


class ContainerCluster:
    """``NODES`` containers of ``image``, one node each, on a network of their own; ``close()`` removes it all."""

    def __init__(self, image: str) -> None:
        self.image = image
        self.tag = hashlib.sha256(f"{os.getpid()}-{time.time_ns()}".encode()).hexdigest()[:8]
        self.network = f"rfk-ct-{self.tag}"
        self.subnet: ipaddress.IPv4Network | None = None
        self.created: list[str] = []
        self.processes: dict[int, psutil.Process] = {}  # every process seen in a container, with conmon: none may stay

    def name(self, node: int) -> str:
        return f"rfk-ct-{self.tag}-{node}"

    def address(self, node: int) -> str:
        assert self.subnet is not None
        return str(self.subnet.network_address + 10 + node)

    def bootstrap(self, nodes: list[int]) -> str:
        return ",".join(f"{self.address(n)}:{KAFKA_PORT}" for n in nodes)

    def admin(self, node: int) -> str:
        return f"http://{self.address(node)}:{ADMIN_PORT}"

    def create(self) -> None:
        owner = ["--label", f"{LABEL}={os.getpid()}"]
        self.subnet = free_subnet(self.tag)
        gateway = str(self.subnet.network_address + 1)
        podman(
            "network",
            "create",
            "--internal",
            "--disable-dns",
            *owner,
            "--subnet",
            str(self.subnet),
            "--gateway",
            gateway,
            self.network,
        )
        voters = ",".join(f"{n}@{self.address(n)}:{RAFT_PORT}" for n in range(1, NODES + 1))
        for n in range(1, NODES + 1):
            settings = {
                "RAFKA_NODE_ID": str(n),
                "RAFKA_BROKER_ID": str((n - 1) * 10),
                "RAFKA_SHARDS": "1",
                "RAFKA_ADVERTISE": f"{self.address(n)}:{KAFKA_PORT}",
                "RAFKA_CONTROLLER_VOTERS": voters,
                "RAFKA_CONTROLLER_SECRET": f"secret-{self.tag}",
            }
            env = [arg for key, value in settings.items() for arg in ("--env", f"{key}={value}")]
            self.created.append(self.name(n))
            podman(
                "run",
                "--detach",
                "--pull=never",
                "--name",
                self.name(n),
                *owner,
                "--network",
                self.network,
                "--ip",
                self.address(n),
                *RUN_ULIMITS,
                "--stop-timeout",
                str(STOP_TIMEOUT_S),
                "--log-driver",
                "k8s-file",
                *env,
                self.image,
            )

    def state(self, node: int) -> dict[str, Any]:
        out = podman("inspect", "--format", "{{json .State}}", self.name(node)).stdout
        state: dict[str, Any] = json.loads(out)
        return state

    def logs(self, node: int) -> str:
        proc = podman("logs", self.name(node), check=False)
        return proc.stdout + proc.stderr

    def all_logs(self) -> str:
        return "\n".join(f"==== {self.name(n)}\n{self.logs(n)[-4000:]}" for n in range(1, NODES + 1))

    def ready(self, node: int) -> bool:
        try:
            with urllib.request.urlopen(f"{self.admin(node)}/v1/status/ready", timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, nodes: list[int]) -> float:
        def check() -> bool:
            for n in nodes:
                if not self.ready(n):
                    state = self.state(n)
                    assert state["Running"], f"{self.name(n)} is not running: {state}\n{self.logs(n)[-5000:]}"
                    return False
            return True

        waited = wait_for(f"nodes {nodes} ready", check, READY_TIMEOUT_S, self.all_logs)
        for n in nodes:
            self.remember_processes(n)
        return waited

    def remember_processes(self, node: int) -> None:
        state = self.state(node)
        for pid in (state.get("Pid"), state.get("ConmonPid")):
            if pid:
                try:
                    p = psutil.Process(int(pid))
                    for q in (p, *p.children(recursive=True)):
                        self.processes[q.pid] = q
                except psutil.NoSuchProcess:
                    pass

    def stop(self, *nodes: int) -> float:
        """``podman stop`` (SIGTERM to PID 1, SIGKILL after STOP_TIMEOUT_S): seconds taken."""
        start = time.monotonic()
        podman("stop", "--time", str(STOP_TIMEOUT_S), *(self.name(n) for n in nodes), timeout=STOP_TIMEOUT_S + 120)
        return time.monotonic() - start

    def assert_clean_exit(self, node: int) -> None:
        state = self.state(node)
        log = self.logs(node)
        assert state["Status"] == "exited" and state["ExitCode"] == 0, f"{self.name(node)}: {state}\n{log[-5000:]}"
        bad = [line for line in log.splitlines() if "ERROR" in line or "Traceback" in line]
        assert not bad, f"{self.name(node)} logged errors:\n" + "\n".join(bad[:50])

    def close(self) -> None:
        """Remove the containers (with their volumes) and the network; fail if a process of theirs stays."""
        problems = []
        if self.created:
            proc = podman(
                "rm", "--force", "--volumes", "--time", "10", *self.created, check=False, timeout=COMMAND_TIMEOUT_S + 60
            )
            listed = podman("ps", "-a", "--filter", f"name=rfk-ct-{self.tag}-", "--format", "{{.Names}}", check=False)
            if listed.stdout.strip():
                problems.append(f"containers not removed: {listed.stdout.split()} ({proc.stderr.strip()})")
        if self.subnet is not None:
            proc = podman("network", "rm", "--force", self.network, check=False)
            if podman("network", "exists", self.network, check=False).returncode == 0:
                problems.append(f"network {self.network} not removed: {proc.stderr.strip()}")
        alive = wait_gone(list(self.processes.values()), timeout_s=30)
        if alive:
            problems.append(f"processes outlived their containers: {[(p.pid, p.name()) for p in alive]}")
            for p in alive:
                p.kill()
        assert not problems, "\n".join(problems)


@pytest.fixture(scope="module")
def image() -> str:
    reason = _missing_tools()
    if reason:
        pytest.skip(reason)
    start = time.monotonic()
    build_base()
    base_s = time.monotonic() - start
    built = build_image()
    print(f"\ncontainer test: base {base_s:.0f} s, image {time.monotonic() - start - base_s:.0f} s ({built})")
    return built


@pytest.fixture
def cluster(image: str) -> Iterator[ContainerCluster]:
    remove_leftovers()
    c = ContainerCluster(image)
    try:
        c.create()
        yield c
    finally:
        c.close()


# ---- clients --------------------------------------------------------------------------------------------------------


def produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    """``values`` spread over the partitions with acks=all (idempotent); every delivery must succeed."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "message.timeout.ms": 90_000}
    )
    errors: list[str] = []

    def delivered(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(str(err))

    for i, v in enumerate(values):
        producer.produce(topic, value=v, partition=i % PARTITIONS, on_delivery=delivered)
        producer.poll(0)
    assert producer.flush(WAIT_S) == 0, "messages still in flight"
    assert not errors, errors[:10]


def consume_all(bootstrap: str, topic: str, expect: int) -> list[bytes]:
    """Every record of every partition from offset 0, until ``expect`` arrived (bounded by WAIT_S)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        got: list[bytes] = []
        deadline = time.monotonic() + WAIT_S
        while len(got) < expect and time.monotonic() < deadline:
            m = consumer.poll(0.5)
            if m is not None and m.error() is None:
                got.append(m.value() or b"")
        return got
    finally:
        consumer.close()


def partitions(cluster: ContainerCluster, node: int, topic: str) -> list[dict[str, Any]]:
    status, body = admin_call(cluster.admin(node), "GET", f"/v1/topics/{topic}")
    assert status == 200, body
    return list(body["partitions"])


def isr_full(cluster: ContainerCluster, node: int, topic: str) -> bool:
    return all(len(p["isr"]) == NODES and p["leader"] != -1 for p in partitions(cluster, node, topic))


def controller_leader(cluster: ContainerCluster, node: int) -> int | None:
    status, body = admin_call(cluster.admin(node), "GET", "/v1/controller")
    return int(body["leader"]) if status == 200 and body.get("leader") is not None else None


# ---- the test -------------------------------------------------------------------------------------------------------


def test_a_cluster_of_containers_serves_the_host_and_a_podman_stop_loses_nothing(cluster: ContainerCluster) -> None:
    timings: dict[str, float] = {}
    everyone = list(range(1, NODES + 1))
    timings["start"] = cluster.wait_ready(everyone)

    topic = "orders"
    status, body = admin_call(
        cluster.admin(1), "POST", "/v1/topics", {"name": topic, "partitions": PARTITIONS, "replication_factor": NODES}
    )
    assert status == 201, body
    wait_for("every ISR full", lambda: isr_full(cluster, 1, topic), WAIT_S, cluster.all_logs)

    before = [b"before-%d" % i for i in range(MESSAGES)]
    produce(cluster.bootstrap(everyone), topic, before)
    assert sorted(consume_all(cluster.bootstrap(everyone), topic, MESSAGES)) == sorted(before)

    # Stop the node leading the metadata quorum: its controlled shutdown hands over partition and Raft leadership.
    leader = controller_leader(cluster, 1)
    assert leader in everyone, leader
    others = [n for n in everyone if n != leader]
    timings["stop"] = cluster.stop(leader)
    cluster.assert_clean_exit(leader)
    assert timings["stop"] < STOP_TIMEOUT_S, f"podman stop took {timings['stop']:.1f} s"

    # The other two keep serving: a new quorum leader, acks=all writes (the ISR shrinks to them), every record readable.
    wait_for("a new quorum leader", lambda: controller_leader(cluster, others[0]) in others, WAIT_S, cluster.all_logs)
    during = [b"during-%d" % i for i in range(MESSAGES)]
    produce(cluster.bootstrap(others), topic, during)
    got = consume_all(cluster.bootstrap(others), topic, 2 * MESSAGES)
    assert sorted(got) == sorted(before + during), f"{len(got)} of {2 * MESSAGES} records"

    # Started again (same container, same volume), the node catches up and is back in every ISR.
    podman("start", cluster.name(leader))
    timings["restart"] = cluster.wait_ready([leader])
    wait_for("the restarted node back in every ISR", lambda: isr_full(cluster, leader, topic), WAIT_S, cluster.all_logs)
    got = consume_all(cluster.bootstrap([leader]), topic, 2 * MESSAGES)
    assert sorted(got) == sorted(before + during), f"{len(got)} of {2 * MESSAGES} records"

    # The whole cluster stops cleanly too.
    timings["stop all"] = cluster.stop(*everyone)
    for n in everyone:
        cluster.assert_clean_exit(n)
    print("container test: " + ", ".join(f"{what} {s:.1f} s" for what, s in timings.items()))
