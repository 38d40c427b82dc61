#!/usr/bin/env python3
"""Restart the nodes of a rafka_shards cluster one at a time, without errors for clients (issue 17).

    python ops/rolling_restart.py --node http://127.0.0.1:9644 'python -m rafka_shards serve ...' \\
                                  --node http://127.0.0.1:9645 '...' --node http://127.0.0.1:9646 '...'

For each node in turn:

1. wait until the cluster is healthy: a controller leader, no fenced broker, no leaderless and no under-replicated
   partition (``GET /v1/cluster/health_overview`` on any node that answers);
2. stop the node with SIGTERM to its supervisor (the parent of the controller process whose pid ``GET /v1/controller``
   reports: this host only). SIGTERM is a controlled shutdown: the node puts its brokers in maintenance, so partition
   leadership moves to other in-sync replicas, hands Raft leadership to another voter, then stops;
3. start it again with its START_COMMAND (``sh -c``, in a new session, output appended to
   ``LOG_DIR/<host>_<port>.log``);
4. wait until it is ready (``GET /v1/status/ready``), its brokers registered, unfenced and out of maintenance (the
   node ends the maintenance its controlled shutdown started), and the cluster healthy again.

At the end, leadership goes back to each partition's preferred replica (the first in its replica list) where that
replica is in sync and active (``POST /v1/partitions/{topic}/{p}/transfer_leadership``): rafka_shards has no
automatic preferred-leader election (Kafka's ``auto.leader.rebalance.enable``); ``--no-rebalance`` skips it.

A secured admin API (README.md, "Securing the admin API"): the tool moves leadership and reads the cluster, so with
``admin_api_require_auth`` it needs a superuser, from the environment (never a flag: ``ps`` shows flags):
``RAFKA_ADMIN_TOKEN`` (a bearer token of the node's token file) or ``RAFKA_ADMIN_USER`` and
``RAFKA_ADMIN_PASSWORD`` (a SCRAM user). Give ``https://`` node URLs for an admin port with TLS; the nodes'
certificates are checked against ``RAFKA_ADMIN_CA_FILE`` (default: the system's CAs), and ``RAFKA_ADMIN_CERT_FILE``
/ ``RAFKA_ADMIN_KEY_FILE`` are presented where nodes require client certificates.

Every wait is bounded (``--timeout-s`` each); the tool exits 1 with the reason at the first one that times out, and
leaves the cluster as it is (a node it started keeps running). Stdlib only; the nodes must run on this host.
``ops/rolling-restart.sh`` wraps it for a cluster started by ``ops/cluster3.sh``.
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

POLL_S = 0.2
HTTP_TIMEOUT_S = 5.0
EXIT_FAILED = 1


class RestartFailed(Exception):
    """A wait that timed out or a node that could not be stopped or started: the message says which."""


@dataclass(frozen=True, slots=True)
class Node:
    admin: str  # http://host:port of its admin API
    start_command: str


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def auth_headers(env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The Authorization header the environment gives (none: the admin API does not require authentication)."""
    token = env.get("RAFKA_ADMIN_TOKEN")
    if token:
        return {"Authorization": f"Bearer {token}"}
    user, password = env.get("RAFKA_ADMIN_USER"), env.get("RAFKA_ADMIN_PASSWORD")
    if user and password:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    return {}


@functools.cache
def tls_context() -> ssl.SSLContext:
    """How https:// node URLs are checked (and which client certificate is presented)."""
    ctx = ssl.create_default_context(cafile=os.environ.get("RAFKA_ADMIN_CA_FILE") or None)
    cert = os.environ.get("RAFKA_ADMIN_CERT_FILE")
    if cert:
        ctx.load_cert_chain(cert, os.environ.get("RAFKA_ADMIN_KEY_FILE") or None)
    return ctx


def http(method: str, url: str, body: object = None) -> tuple[int, Any]:
    """(status, decoded JSON or None); status 0 when nothing answered."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **auth_headers()}
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    context = tls_context() if url.startswith("https://") else None
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S, context=context) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw) if raw else None
        except ValueError:
            return e.code, None
    except (urllib.error.URLError, OSError, ValueError):
        return 0, None


def wait_for(what: str, check: Callable[[], str | None], timeout_s: float) -> None:
    """Poll ``check`` (None: done; else what is still missing) until done; RestartFailed after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    missing = check()
    while missing is not None:
        if time.monotonic() >= deadline:
            raise RestartFailed(f"timed out after {timeout_s:.0f}s waiting for {what}: {missing}")
        time.sleep(POLL_S)
        missing = check()


def cluster_unhealthy(nodes: list[Node]) -> str | None:
    """None if a node that answers reports a healthy cluster, else why not."""
    why = "no node answers /v1/cluster/health_overview"
    for node in nodes:
        status, body = http("GET", f"{node.admin}/v1/cluster/health_overview")
        if status != 200 or not isinstance(body, dict):
            continue
        if body.get("is_healthy"):
            return None
        why = (
            f"{node.admin} reports {body.get('unhealthy_reasons')} (under-replicated "
            f"{body.get('under_replicated_count')}, leaderless {body.get('leaderless_count')}, fenced brokers "
            f"{body.get('nodes_down')})"
        )
    return why


def local_brokers(node: Node) -> list[int]:
    status, shards = http("GET", f"{node.admin}/v1/shards")
    if status != 200 or not isinstance(shards, list):
        raise RestartFailed(f"{node.admin}/v1/shards answered {status}")
    return sorted(int(s["broker_id"]) for s in shards)


def brokers_not_active(node: Node, brokers: list[int]) -> str | None:
    status, listed = http("GET", f"{node.admin}/v1/brokers")
    if status != 200 or not isinstance(listed, list):
        return f"/v1/brokers answered {status}"
    by_id = {int(b["broker_id"]): b for b in listed}
    bad = {b: by_id[b]["status"] if b in by_id else "unregistered" for b in brokers}
    bad = {b: s for b, s in bad.items() if s != "active"}
    return None if not bad else f"brokers {bad}"


def supervisor_pid(node: Node) -> int:
    """The node's supervisor: the parent of its controller process. Checked to be a rafka_shards process."""
    status, body = http("GET", f"{node.admin}/v1/controller")
    if status != 200 or not isinstance(body, dict):
        raise RestartFailed(f"{node.admin}/v1/controller answered {status}")
    controller_pid = int(body["process"]["pid"])
    try:
        stat = Path(f"/proc/{controller_pid}/stat").read_text()
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        title = Path(f"/proc/{ppid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, ValueError, IndexError) as e:
        raise RestartFailed(f"{node.admin}: controller pid {controller_pid} is not a process of this host ({e})") from e
    if "rafka_shards" not in title:
        raise RestartFailed(f"{node.admin}: the controller's parent {ppid} is not a rafka_shards node: {title!r}")
    return ppid


def process_gone(pid: int) -> bool:
    """Gone or a zombie (exited; its parent, maybe not us, has not reaped it yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat[stat.rindex(")") + 2 :].startswith("Z")


def stop_node(node: Node, timeout_s: float) -> None:
    pid = supervisor_pid(node)
    log(f"{node.admin}: SIGTERM to supervisor pid {pid} (controlled shutdown)")
    started = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    wait_for(
        f"{node.admin}'s supervisor (pid {pid}) to exit", lambda: None if process_gone(pid) else "running", timeout_s
    )
    log(f"{node.admin}: stopped in {time.monotonic() - started:.1f}s")


def start_node(node: Node, log_dir: Path) -> subprocess.Popen[bytes]:
    parsed = urllib.parse.urlsplit(node.admin)
    log_path = log_dir / f"{parsed.hostname}_{parsed.port}.log"
    log(f"{node.admin}: starting: {node.start_command} (output to {log_path})")
    with open(log_path, "ab") as out:
        return subprocess.Popen(
            ["/bin/sh", "-c", node.start_command],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # it outlives this tool, like the node it replaces
        )


def wait_back(node: Node, proc: subprocess.Popen[bytes], brokers: list[int], timeout_s: float) -> None:
    def ready() -> str | None:
        code = proc.poll()
        if code is not None:
            raise RestartFailed(f"{node.admin}: the started node exited with {code} (see its log)")
        status, _ = http("GET", f"{node.admin}/v1/status/ready")
        return None if status == 200 else f"/v1/status/ready answered {status or 'nothing'}"

    started = time.monotonic()
    wait_for(f"{node.admin} to be ready", ready, timeout_s)
    log(f"{node.admin}: ready in {time.monotonic() - started:.1f}s")
    wait_for(f"{node.admin}'s brokers to be active", lambda: brokers_not_active(node, brokers), timeout_s)
    log(f"{node.admin}: brokers {brokers} active (registered, unfenced, out of maintenance)")


def rebalance(nodes: list[Node]) -> int:
    """Move leadership back to preferred replicas that are in sync and active; how many moved."""
    admin = next((n.admin for n in nodes if http("GET", f"{n.admin}/v1/status/live")[0] == 200), None)
    if admin is None:
        raise RestartFailed("no node answers for the leader rebalance")
    status, brokers = http("GET", f"{admin}/v1/brokers")
    status_t, topics = http("GET", f"{admin}/v1/topics")
    if status != 200 or status_t != 200 or not isinstance(brokers, list) or not isinstance(topics, list):
        raise RestartFailed(f"{admin}: /v1/brokers or /v1/topics answered {status}, {status_t}")
    active = {int(b["broker_id"]) for b in brokers if b["status"] == "active"}
    moved = 0
    for t in topics:
        name = urllib.parse.quote(t["name"], safe="")
        status, body = http("GET", f"{admin}/v1/topics/{name}")
        if status != 200 or not isinstance(body, dict):
            continue  # deleted meanwhile
        for p in body["partitions"]:
            preferred = p["replicas"][0]
            if p["leader"] == preferred or preferred not in p["isr"] or preferred not in active:
                continue
            path = f"/v1/partitions/{name}/{p['partition']}/transfer_leadership"
            status, answer = http("POST", f"{admin}{path}", {"target": preferred})
            if status == 200:
                moved += 1
            else:
                log(f"{t['name']}/{p['partition']}: leadership not moved to broker {preferred}: {status} {answer}")
    return moved


def rolling_restart(nodes: list[Node], log_dir: Path, timeout_s: float, rebalance_leaders: bool) -> None:
    brokers = {node.admin: local_brokers(node) for node in nodes}
    for i, node in enumerate(nodes, 1):
        log(f"[{i}/{len(nodes)}] {node.admin} (brokers {brokers[node.admin]})")
        wait_for("a healthy cluster", lambda: cluster_unhealthy(nodes), timeout_s)
        stop_node(node, timeout_s)
        proc = start_node(node, log_dir)
        wait_back(node, proc, brokers[node.admin], timeout_s)
        started = time.monotonic()
        wait_for("a healthy cluster (under-replicated 0)", lambda: cluster_unhealthy(nodes), timeout_s)
        log(f"cluster healthy {time.monotonic() - started:.1f}s after {node.admin} was back")
    if rebalance_leaders:
        log(f"leadership moved back to {rebalance(nodes)} preferred replica(s)")
    log("rolling restart done")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--node",
        nargs=2,
        action="append",
        required=True,
        metavar=("ADMIN_URL", "START_COMMAND"),
        help="a node's admin API and the shell command that starts it again; in restart order",
    )
    parser.add_argument("--timeout-s", type=float, default=300.0, help="bound of each wait (default 300)")
    parser.add_argument("--log-dir", type=Path, default=Path("."), help="where restarted nodes write their output")
    parser.add_argument("--no-rebalance", action="store_true", help="leave leadership where the restarts put it")
    args = parser.parse_args(argv)
    nodes = [Node(admin.rstrip("/"), command) for admin, command in args.node]
    args.log_dir.mkdir(parents=True, exist_ok=True)
    try:
        rolling_restart(nodes, args.log_dir, args.timeout_s, not args.no_rebalance)
    except RestartFailed as e:
        log(f"rolling restart FAILED: {e}")
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
