"""Fixtures that start REAL broker processes (``python -m rafka_shards serve``) on 127.0.0.1 for integration tests."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path

import psutil
import pytest
from hypothesis import settings

from bench.chaos.cluster import wait_gone  # one definition: the verifier's, which tests share

# Property tests judge outcomes, never speed: a busy 2-core machine must not fail them on Hypothesis's per-example
# deadline (200 ms by default), which a first example paying for imports can pass under load.
settings.register_profile("rafka", deadline=None)
settings.load_profile("rafka")

# The order of the run. ops/test.sh runs pytest-xdist with --dist worksteal: each worker starts on its half of the
# collection and an idle one takes half of what another has not started. The modules whose tests take longest (25 s
# and more each in CI: a base image and container cluster, chaos seeds, tiny benchmark runs, a 4-node rebalance, a pod)
# go first, longest first, so that none of them starts near the end with the other worker idle beside it; the many
# short unit tests come last and even out the finish. Within a module the order is kept.
SLOW_FIRST = (
    "tests/ops/test_container.py",
    "tests/integration/test_chaos.py",
    "tests/integration/test_bench.py",
    "tests/integration/test_balancer.py",
    "tests/ops/test_k8s.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        if item.get_closest_marker("container") is not None:
            return 0
        path = item.nodeid.split("::", 1)[0]
        return SLOW_FIRST.index(path) if path in SLOW_FIRST else len(SLOW_FIRST)

    items.sort(key=rank)  # stable: everything else keeps pytest's order


START_TIMEOUT_S = 90.0  # generous: a busy 2-core machine starts four shards slowly
STOP_TIMEOUT_S = 30.0


def describe(p: psutil.Process) -> str:
    """One process for a failure message: pid, command line, state, and where its threads are."""
    try:
        return f"{p.pid} {' '.join(p.cmdline()[-4:])} {p.status()} threads={p.num_threads()}"
    except psutil.Error:
        return f"{p.pid} (gone)"


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port_range(count: int) -> int:
    """The first of ``count`` consecutive ports that are free right now (shard i listens on base + i).

    Chosen below the kernel's ephemeral range, so a client's outgoing connection cannot take one of them between
    this check and the broker's bind (or between a broker's stop and its restart).
    """
    rng = random.Random()
    high = min(_ephemeral_low(), 65536) - count
    for _ in range(200):
        base = rng.randrange(10_000, high)
        socks = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {count} consecutive free ports")


class Broker:
    """One node (supervisor + shard processes) with its data directory; restartable on the same ports."""

    def __init__(
        self,
        data_dir: Path,
        extra_args: list[str] | None = None,
        shards: int = 1,
        wrapper: list[str] | None = None,
        admin_tls: ssl.SSLContext | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.admin_tls = admin_tls  # the admin port speaks HTTPS (--admin-ssl-cert-file): how this client connects
        self.wrapper = wrapper or []  # a command that execs the node's command line given as its last arguments
        self.shards = shards
        self.port = free_port_range(shards + 1)
        self.admin_port = self.port + shards
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-broker.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ports(self) -> list[int]:
        return [self.port + i for i in range(self.shards)]

    def admin_get(self, path: str) -> object:
        with urllib.request.urlopen(f"{self.admin}{path}", timeout=10, context=self.admin_tls) as r:
            return json.loads(r.read())

    def shard_pids(self) -> list[int]:
        shards = self.admin_get("/v1/shards")
        assert isinstance(shards, list)
        return [int(s["pid"]) for s in shards]

    def controller_pid(self) -> int:
        """The node's controller process (the Raft member, the shards' channels, the admin API)."""
        status = self.admin_get("/v1/controller")
        assert isinstance(status, dict)
        return int(status["process"]["pid"])

    def process_tree(self) -> list[psutil.Process]:
        """The supervisor and every process it started (controller, shards, multiprocessing helpers)."""
        assert self.proc is not None
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    @property
    def admin(self) -> str:
        scheme = "http" if self.admin_tls is None else "https"
        return f"{scheme}://127.0.0.1:{self.admin_port}"

    def start(self) -> None:
        self.launch()
        self.wait_ready()

    def launch(self) -> None:
        """Start the node's process without waiting for it (nodes of a cluster wait for each other's quorum)."""
        assert self.proc is None or self.proc.poll() is not None
        log = open(self.log_path, "ab")  # noqa: SIM115  (the broker process owns it until it exits)
        self.proc = subprocess.Popen(
            [
                *self.wrapper,
                sys.executable,
                "-m",
                "rafka_shards",
                "serve",
                "--data-dir",
                str(self.data_dir),
                "--listen",
                self.bootstrap,
                "--shards",
                str(self.shards),
                "--admin-listen",
                f"127.0.0.1:{self.admin_port}",
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: kill() takes down the node and its shards at once
        )
        log.close()

    def wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.admin}/v1/status/ready", timeout=1, context=self.admin_tls) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"broker not ready within {START_TIMEOUT_S}s:\n{self.log()}")

    def log(self, tail: int = 5000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except FileNotFoundError:
            return ""

    def stop(self) -> int:
        """SIGTERM and wait; the exit code (0 for a clean shutdown). Fails if any process of the node outlives it."""
        assert self.proc is not None
        tree = self.process_tree()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            stuck = [describe(p) for p in tree if p.is_running()]
            for p in tree:  # each writes its threads' stacks to the log (faulthandler, see event_loop.run)
                with contextlib.suppress(psutil.Error):
                    p.send_signal(signal.SIGUSR1)
            time.sleep(1)
            self.kill()
            raise AssertionError(
                f"node did not stop in {STOP_TIMEOUT_S}s; running: {stuck}\n{self.log(50_000)}"
            ) from None
        alive = wait_gone(tree, timeout_s=5)
        if alive:
            for p in alive:
                p.kill()
            raise AssertionError(f"processes outlived the node: {[(p.pid, p.name()) for p in alive]}")
        return code

    def kill(self) -> None:
        """A crash of the whole node: SIGKILL to the supervisor, the controller and every shard at the same instant."""
        if self.proc is not None and self.proc.poll() is None:
            tree = self.process_tree()
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            wait_gone(tree, timeout_s=STOP_TIMEOUT_S)

    def signal_all(self, sig: signal.Signals) -> None:
        """``sig`` to every process of the node at once (SIGSTOP/SIGCONT: the node is cut off, then back)."""
        assert self.proc is not None and self.proc.poll() is None
        os.killpg(self.proc.pid, sig)

    def restart(self) -> None:
        assert self.stop() == 0, self.log()
        self.start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def stop_all(nodes: Iterable[Broker]) -> None:
    """Stop every node still running, each one even if an earlier one did not stop cleanly (a node left running
    would load the machine for the tests after it), then fail with every problem found."""
    problems: list[str] = []

    def stop(b: Broker) -> None:
        try:
            code = b.stop()
        except AssertionError as e:
            problems.append(str(e))
            return
        if code != 0:
            problems.append(f"node exited with {code} on SIGTERM:\n{b.log()}")

    # At the same time, as an operator stopping a whole cluster does: one after another, each node's stop waited for
    # the one before it (about 2-3 s each on this machine).
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        for done in [pool.submit(stop, b) for b in nodes if b.alive()]:
            done.result()
    assert not problems, "\n\n".join(problems)


def running(b: Broker) -> Iterator[Broker]:
    """Fixture body: start ``b``, hand it to the test, then require a clean SIGTERM shutdown if it still runs."""
    b.start()
    yield b
    if b.alive():
        code = b.stop()
        assert code == 0, f"node exited with {code} on SIGTERM:\n{b.log()}"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    yield from running(Broker(tmp_path / "data"))


@pytest.fixture
def topic_name(request: pytest.FixtureRequest) -> str:
    return "t-" + "".join(c if c.isalnum() else "-" for c in request.node.name)[:100]
