"""A local rafka_shards cluster under the verifier's control: start, SIGKILL, SIGSTOP/SIGCONT and restart its nodes,
and ask it (admin API) who leads what.

Runs in the bench's orchestrating process. Each node is ``python -m rafka_shards serve`` with its own node id, broker
ids, ports and data directory, in its own session (process group), so one ``killpg`` reaches the supervisor, the
controller process and every shard at the same instant. A node's command can be wrapped (``NodeSpec.prefix``, e.g.
``ip netns exec rafka-n1``: a network namespace from ``bench/chaos/netns.py``), listen on another address than
127.0.0.1 (``host``) and keep its data on a given mountpoint (``data_dir``, e.g. a LazyFS mount from
``bench/chaos/lazyfs.py``): the hooks the partition and power-loss faults need.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psutil

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
ADMIN_TIMEOUT_S = 3.0
POLL_S = 0.1
BROKER_ID_STRIDE = 100  # node i's shards are broker ids i*100 .. i*100+shards-1
# The verifier kills shards and controllers on purpose, for as long as a run lasts: not a crash loop. Every other
# setting is the broker's default (leases, timeouts, durability), as a user runs it; --broker-arg changes them.
SHARD_RESTARTS_MAX = 1000


class ClusterError(RuntimeError):
    """The cluster could not be brought to the state asked for within its bound."""


class NetLike(Protocol):
    """What the partition fault needs of ``bench/chaos/netns.py``'s ``Net`` (one network namespace per node)."""

    def node_address(self, i: int) -> str: ...
    def wrap(self, i: int, argv: list[str]) -> list[str]: ...
    def isolate(self, i: int) -> None: ...
    def heal_all(self) -> None: ...
    def close(self) -> None: ...


class LazyFSLike(Protocol):
    """What the power-loss fault needs of ``bench/chaos/lazyfs.py``'s ``LazyFS`` (one mount per node)."""

    def start(self) -> None: ...
    def pull_plug(self) -> tuple[int, int]: ...
    def stop(self) -> None: ...


@dataclass(frozen=True, slots=True)
class NodeSpec:
    node_id: int
    broker_id: int  # shard 0's; shard i is broker_id + i
    shards: int
    host: str  # listen and advertise address of every listener of the node
    kafka_port: int  # shard 0's; shard i listens on kafka_port + i
    admin_port: int
    raft_port: int
    data_dir: Path
    log_path: Path
    voters: str  # --controller-voters, the same on every node
    prefix: tuple[str, ...] = ()  # a command wrapper, e.g. ("ip", "netns", "exec", "rafka-n1")
    extra_args: tuple[str, ...] = ()

    def argv(self) -> list[str]:
        return [
            *self.prefix,
            sys.executable,
            "-m",
            "rafka_shards",
            "serve",
            "--node-id",
            str(self.node_id),
            "--broker-id",
            str(self.broker_id),
            "--shards",
            str(self.shards),
            "--controller-voters",
            self.voters,
            "--listen",
            f"{self.host}:{self.kafka_port}",
            "--admin-listen",
            f"{self.host}:{self.admin_port}",
            "--data-dir",
            str(self.data_dir),
            "--shard-restarts-max",
            str(SHARD_RESTARTS_MAX),
            *self.extra_args,
        ]

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.kafka_port}"

    def owns_broker(self, broker_id: int) -> bool:
        return self.broker_id <= broker_id < self.broker_id + self.shards


class Node:
    """One node's process tree. Its state is what the verifier did to it: up, down (killed) or paused."""

    def __init__(self, spec: NodeSpec) -> None:
        self.spec = spec
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False
        self.cut_off = False  # isolated by a network partition: neither the verifier nor clients reach it

    @property
    def name(self) -> str:
        return f"node {self.spec.node_id}"

    def launch(self) -> None:
        assert not self.running()
        self.spec.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.spec.log_path, "ab") as log:
            log.write(f"---- {time.strftime('%H:%M:%S')} start: {' '.join(self.spec.argv())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.spec.argv(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        self.paused = False

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def admin(self, path: str, method: str = "GET", body: Any = None, timeout_s: float = ADMIN_TIMEOUT_S) -> Any:
        data = None if body is None else json.dumps(body).encode()
        url = f"http://{self.spec.host}:{self.spec.admin_port}{path}"
        req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            return json.loads(r.read())

    def ready(self) -> bool:
        if not self.running() or self.paused:
            return False
        with contextlib.suppress(OSError, ValueError, urllib.error.URLError):
            return bool(self.admin("/v1/status/ready", timeout_s=1.0).get("status") == "ready")
        return False

    def tree(self) -> list[psutil.Process]:
        if self.proc is None:
            return []
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def signal_group(self, sig: signal.Signals) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole node at once (a crash); returns once every process of it is gone."""
        if self.proc is None:
            return
        tree = self.tree()
        self.signal_group(signal.SIGKILL)
        for p in tree:  # anything that left the group (none should) dies too
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        self.proc.wait()
        wait_gone(tree, STOP_TIMEOUT_S)
        self.paused = False

    def pause(self) -> None:
        self.signal_group(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self.signal_group(signal.SIGCONT)
        self.paused = False

    def stop(self) -> None:
        """SIGTERM (a clean shutdown, segments closed), SIGKILL if it outlasts ``STOP_TIMEOUT_S``."""
        if self.proc is None:
            return
        if self.paused:
            self.resume()
        if self.proc.poll() is None:
            tree = self.tree()
            self.signal_group(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(STOP_TIMEOUT_S)
            if wait_gone(tree, 5.0) or self.proc.poll() is None:
                self.kill()
        self.signal_group(signal.SIGKILL)  # anything of its group left behind

    def shard_pids(self) -> list[int]:
        return [int(s["pid"]) for s in self.admin("/v1/shards") if s.get("pid")]

    def controller_pid(self) -> int:
        return int(self.admin("/v1/controller")["process"]["pid"])


class Cluster:
    """The nodes of one run, with the ``Net`` of the partition fault and the ``LazyFS`` mounts of power loss when
    those faults are on."""

    def __init__(self, specs: list[NodeSpec], net: NetLike | None = None) -> None:
        self.nodes = {s.node_id: Node(s) for s in specs}
        self.net = net
        self.lazyfs: dict[int, LazyFSLike] = {}

    @property
    def bootstrap(self) -> str:
        return ",".join(n.spec.bootstrap for n in self.nodes.values())

    def start(self) -> None:
        for node in self.nodes.values():
            node.launch()
        self.wait_ready(self.nodes.values())

    def wait_ready(self, nodes: Any, timeout_s: float = READY_TIMEOUT_S) -> None:
        wanted = list(nodes)
        wait_for(lambda: all(n.ready() for n in wanted), timeout_s, f"{', '.join(n.name for n in wanted)} ready")

    def reachable(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.running() and not n.paused and not n.cut_off]

    def ask(self, path: str, method: str = "GET", body: Any = None, timeout_s: float = ADMIN_TIMEOUT_S) -> Any:
        """The first answer from a reachable node's admin API; ClusterError if none answers."""
        last = "no reachable node"
        for node in self.reachable():
            try:
                return node.admin(path, method, body, timeout_s)
            except (OSError, ValueError, urllib.error.URLError) as e:
                last = f"{node.name}: {e}"
        raise ClusterError(f"{method} {path}: {last}")

    def raft_leader(self) -> int | None:
        with contextlib.suppress(ClusterError):
            leader = self.ask("/v1/controller").get("leader")
            return int(leader) if leader else None
        return None

    def partitions(self, topic: str) -> list[dict[str, Any]]:
        parts = self.ask(f"/v1/topics/{topic}")["partitions"]
        assert isinstance(parts, list)
        return parts

    def net_index(self, node_id: int) -> int:
        """The node's index in ``Net`` (0-based, in node id order)."""
        return sorted(self.nodes).index(node_id)

    def node_of_broker(self, broker_id: int) -> Node | None:
        return next((n for n in self.nodes.values() if n.spec.owns_broker(broker_id)), None)

    def create_topic(self, topic: str, partitions: int, replication_factor: int, min_insync: int) -> None:
        body = {
            "name": topic,
            "partitions": partitions,
            "replication_factor": replication_factor,
            "configs": {"min.insync.replicas": str(min_insync)},
        }

        def created() -> bool:
            try:
                self.ask("/v1/topics", "POST", body, timeout_s=30)
                return True
            except urllib.error.HTTPError as e:
                return e.code == 409  # already there: an earlier attempt went through
            except ClusterError:
                return False

        wait_for(created, READY_TIMEOUT_S, f"topic {topic} created")

    def healthy(self, topic: str) -> bool:
        """Every node up and ready, and every partition led with its full replica set in sync."""
        if not all(n.ready() for n in self.nodes.values()):
            return False
        try:
            parts = self.partitions(topic)
        except (ClusterError, urllib.error.HTTPError, KeyError):
            return False
        return all(p["leader"] >= 0 and sorted(p["isr"]) == sorted(p["replicas"]) for p in parts)

    def close(self) -> None:
        """Stop every node (SIGCONT first for a paused one), then unmount the LazyFS mounts (their buffered data
        reaches the backing dirs) and remove the network namespaces. Safe to call twice."""
        for node in self.nodes.values():
            node.stop()
        for fs in self.lazyfs.values():
            fs.stop()
        self.lazyfs.clear()
        if self.net is not None:
            self.net.close()
            self.net = None

    def stop_all(self) -> None:
        """Stop every node (``Node.stop``) at the same time: each is a clean shutdown of its own, and three in a row
        took three times as long for nothing."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(self.nodes)) as pool:
            for done in [pool.submit(node.stop) for node in self.nodes.values()]:
                done.result()

    def kill_all(self) -> None:
        for node in self.nodes.values():
            node.resume()
            node.kill()


def wait_gone(procs: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait until every process has exited (a zombie counts: init reaps orphans when it gets to it); those left."""

    def running(p: psutil.Process) -> bool:
        try:
            return bool(p.is_running() and p.status() != psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + timeout_s
    alive = [p for p in procs if running(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [p for p in alive if running(p)]
    return alive


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Seconds until ``check()`` holds; ClusterError after ``timeout_s``."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout_s:
            raise ClusterError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(POLL_S)
    return time.monotonic() - start


def specs(
    root: Path,
    nodes: int,
    shards: int,
    base_port: int,
    host_of: Callable[[int], str] = lambda _i: "127.0.0.1",
    prefix_of: Callable[[int], tuple[str, ...]] = lambda _i: (),
    extra_args: tuple[str, ...] = (),
) -> list[NodeSpec]:
    """Node i (1-based) uses ports base + (i-1)*(shards+2) ...: its shards' Kafka listeners, then admin, then Raft."""
    stride = shards + 2
    ports = {i: base_port + (i - 1) * stride for i in range(1, nodes + 1)}
    voters = ",".join(f"{i}@{host_of(i)}:{ports[i] + shards + 1}" for i in ports)
    return [
        NodeSpec(
            node_id=i,
            broker_id=i * BROKER_ID_STRIDE,
            shards=shards,
            host=host_of(i),
            kafka_port=ports[i],
            admin_port=ports[i] + shards,
            raft_port=ports[i] + shards + 1,
            data_dir=root / f"node{i}" / "data",
            log_path=root / f"node{i}.log",
            voters=voters,
            prefix=prefix_of(i),
            extra_args=extra_args,
        )
        for i in ports
    ]


def ports_needed(nodes: int, shards: int) -> int:
    return nodes * (shards + 2)
