"""Real network partitions between the nodes of a local cluster: one Linux network namespace per node on a bridge.

Runs in the verifier's process (root only: it calls ``ip`` and ``nft``). What it owns, all named after a hash of the
run id so parallel runs (pytest-xdist workers, two verifiers) never collide:

- a bridge ``rfkb<tag>`` in the root namespace with the address ``10.199.<k>.1/24``; clients in the root namespace
  (producers, consumers, the verifier's admin calls) reach every node through it;
- per node ``i`` a namespace ``rfk-<tag>-<i>`` with loopback up and one veth (``eth0``, address
  ``10.199.<k>.<10+i>/24``) whose other end is plugged into the bridge;
- inside each namespace an nftables table ``inet rafka_chaos`` with one set of blocked peer addresses; an ``input``
  and an ``output`` chain drop every packet from or to an address in that set.

A cut DROPS packets (no RST, no ICMP unreachable), so both sides see what a real partition looks like: connects and
requests time out, established connections hang until their own timeouts. ``10.199.<k>.0/24`` exists only on this
bridge and inside these namespaces (the subnet's third octet comes from the run id and skips any ``10.199.*`` subnet
already configured on the machine); that traffic never leaves the machine.

Metadata operations are idempotent where it matters: ``Net(...)`` first removes leftovers of the same run id (a
crashed earlier run), and ``close()`` removes everything even when some step fails, so the machine is left without
namespace, bridge or nft table of this run. Processes still running inside a namespace when it closes keep their
network stack alive until they exit: stop the nodes first.

Usage::

    with Net(3, run_id="seed-42") as net:
        argv = net.wrap(0, [sys.executable, "-m", "rafka_shards", "serve", "--listen", f"{net.node_address(0)}:9092"])
        ...
        net.cut(0, 1)      # nodes 0 and 1 no longer reach each other; 2 still reaches both
        net.isolate(2)     # 2 reaches nobody, and clients on the bridge do not reach 2
        net.heal_all()
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import shutil
import subprocess
from types import TracebackType

# An interface name has at most 15 bytes (IFNAMSIZ - 1): prefixes of 4, a tag of 8, a node index of at most 3.
NODES_MAX = 200
TAG_CHARS = 8
COMMAND_TIMEOUT_S = 30.0
TABLE = "rafka_chaos"
_BRIDGE_PEER = -1  # stands for "clients in the root namespace" in the cut set


class NetError(RuntimeError):
    """An ``ip``/``nft`` command failed; the message carries its command line and stderr."""


def available() -> str | None:
    """None if this process can build a Net; otherwise why not (for a test's skip reason)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (Debian: iproute2, nftables)"
    return None


def _run(argv: list[str], stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)
    if check and proc.returncode != 0:
        raise NetError(f"{' '.join(argv)} exited with {proc.returncode}: {proc.stderr.strip()}")
    return proc


def _tag(run_id: str) -> str:
    return hashlib.sha256(run_id.encode()).hexdigest()[:TAG_CHARS]


class Net:
    """A bridge plus ``nodes`` network namespaces for one run; see the module docstring."""

    def __init__(self, nodes: int, run_id: str) -> None:
        if not 1 <= nodes <= NODES_MAX:
            raise ValueError(f"nodes must be in 1..{NODES_MAX}, not {nodes}")
        self.nodes = nodes
        self.run_id = run_id
        self.tag = _tag(run_id)
        self.bridge = f"rfkb{self.tag}"
        self._namespaces = [f"rfk-{self.tag}-{i}" for i in range(nodes)]
        # Pairs of nodes (and node/_BRIDGE_PEER) whose traffic is dropped; the nft sets are rebuilt from this.
        self._cuts: set[frozenset[int]] = set()
        self._closed = False
        self._remove_leftovers()
        self._subnet = self._free_subnet()
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    # ---- addresses and commands -------------------------------------------------------------------------------

    def namespace(self, i: int) -> str:
        self._check_node(i)
        return self._namespaces[i]

    def node_address(self, i: int) -> str:
        """Node ``i``'s IPv4 address inside its namespace: what it listens on and what the others dial."""
        self._check_node(i)
        return str(self._subnet.network_address + 10 + i)

    def bridge_address(self) -> str:
        """The root namespace's address on the bridge: the source address of every client outside the nodes."""
        return str(self._subnet.network_address + 1)

    def wrap(self, i: int, argv: list[str]) -> list[str]:
        """``argv`` run inside node ``i``'s namespace (``ip netns exec`` execs it: the pid is the command's own)."""
        return ["ip", "netns", "exec", self.namespace(i), *argv]

    # ---- faults -----------------------------------------------------------------------------------------------

    def cut(self, i: int, j: int) -> None:
        """Drop every packet between nodes ``i`` and ``j``, both directions; other links keep working."""
        self._check_node(i)
        self._check_node(j)
        if i == j:
            raise ValueError("a node cannot be cut from itself")
        self._cuts.add(frozenset((i, j)))
        self._apply({i, j})

    def heal(self, i: int, j: int) -> None:
        """Undo ``cut(i, j)`` (also the i-j part of an ``isolate``)."""
        self._check_node(i)
        self._check_node(j)
        self._cuts.discard(frozenset((i, j)))
        self._apply({i, j})

    def isolate(self, i: int) -> None:
        """Cut node ``i`` from every other node and from every client in the root namespace."""
        self._check_node(i)
        for j in range(self.nodes):
            if j != i:
                self._cuts.add(frozenset((i, j)))
        self._cuts.add(frozenset((i, _BRIDGE_PEER)))
        self._apply(set(range(self.nodes)))

    def heal_all(self) -> None:
        self._cuts.clear()
        self._apply(set(range(self.nodes)))

    def blocked(self, i: int) -> list[str]:
        """The addresses node ``i`` currently drops traffic from and to (for logs and tests)."""
        self._check_node(i)
        return sorted(self._peer_address(p) for c in self._cuts if i in c for p in c if p != i)

    # ---- lifecycle --------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Remove every namespace (with its veth and nft table) and the bridge; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        errors: list[str] = []
        for i in range(self.nodes):
            # Deleting the host end removes the pair now; a namespace still held by a process would keep it.
            _run(["ip", "link", "del", self._veth(i)], check=False)
        for ns in self._namespaces:
            proc = _run(["ip", "netns", "del", ns], check=False)
            if proc.returncode != 0 and ns in _list_namespaces():
                errors.append(proc.stderr.strip())
        proc = _run(["ip", "link", "del", self.bridge], check=False)
        if proc.returncode != 0 and _link_exists(self.bridge):
            errors.append(proc.stderr.strip())
        if errors:
            raise NetError(f"could not remove everything of run {self.run_id!r}: {errors}")

    def __enter__(self) -> Net:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ---- internals --------------------------------------------------------------------------------------------

    def _check_node(self, i: int) -> None:
        if not 0 <= i < self.nodes:
            raise IndexError(f"node {i} is not in 0..{self.nodes - 1}")

    def _peer_address(self, p: int) -> str:
        return self.bridge_address() if p == _BRIDGE_PEER else self.node_address(p)

    def _remove_leftovers(self) -> None:
        # A crashed run with the same id left these behind: same names, so they would make _build fail.
        prefix = f"rfk-{self.tag}-"
        for ns in _list_namespaces():
            if ns.startswith(prefix):
                _run(["ip", "netns", "del", ns], check=False)
        if _link_exists(self.bridge):
            _run(["ip", "link", "del", self.bridge], check=False)
        for i in range(self.nodes):
            if _link_exists(self._veth(i)):
                _run(["ip", "link", "del", self._veth(i)], check=False)

    def _free_subnet(self) -> ipaddress.IPv4Network:
        """10.199.<k>.0/24 with k from the run id, moved on past subnets some other run already uses."""
        used = set(re.findall(r"inet 10\.199\.(\d+)\.", _run(["ip", "-o", "-4", "addr", "show"]).stdout))
        start = int(self.tag, 16) % 256
        for step in range(256):
            k = (start + step) % 256
            if str(k) not in used:
                return ipaddress.IPv4Network(f"10.199.{k}.0/24")
        raise NetError("every 10.199.<k>.0/24 subnet is in use")

    def _veth(self, i: int) -> str:
        return f"rfkv{self.tag}{i}"

    def _build(self) -> None:
        prefix = self._subnet.prefixlen
        _run(["ip", "link", "add", self.bridge, "type", "bridge"])
        _run(["ip", "addr", "add", f"{self.bridge_address()}/{prefix}", "dev", self.bridge])
        _run(["ip", "link", "set", self.bridge, "up"])
        for i, ns in enumerate(self._namespaces):
            host, peer = self._veth(i), f"rfkp{self.tag}{i}"
            _run(["ip", "netns", "add", ns])
            _run(["ip", "link", "add", host, "type", "veth", "peer", "name", peer])
            _run(["ip", "link", "set", host, "master", self.bridge])
            _run(["ip", "link", "set", host, "up"])
            _run(["ip", "link", "set", peer, "netns", ns])
            inside = ["ip", "netns", "exec", ns]
            _run([*inside, "ip", "link", "set", peer, "name", "eth0"])
            _run([*inside, "ip", "addr", "add", f"{self.node_address(i)}/{prefix}", "dev", "eth0"])
            _run([*inside, "ip", "link", "set", "eth0", "up"])
            _run([*inside, "ip", "link", "set", "lo", "up"])
            # Drop, never reject: a partition is silence. Priority -10 runs before any filter a test might add.
            _run(
                [*inside, "nft", "-f", "-"],
                stdin=(
                    f"table inet {TABLE} {{\n"
                    "  set blocked { type ipv4_addr; }\n"
                    "  chain input { type filter hook input priority -10; policy accept; "
                    "ip saddr @blocked drop; }\n"
                    "  chain output { type filter hook output priority -10; policy accept; "
                    "ip daddr @blocked drop; }\n"
                    "}\n"
                ),
            )

    def _apply(self, nodes: set[int]) -> None:
        """Rewrite the blocked set of each of ``nodes`` from ``_cuts``: one nft transaction per namespace."""
        for i in sorted(nodes):
            addresses = self.blocked(i)
            script = f"flush set inet {TABLE} blocked\n"
            if addresses:
                script += f"add element inet {TABLE} blocked {{ {', '.join(addresses)} }}\n"
            _run(["ip", "netns", "exec", self._namespaces[i], "nft", "-f", "-"], stdin=script)


def _list_namespaces() -> list[str]:
    out = _run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _link_exists(name: str) -> bool:
    return _run(["ip", "link", "show", name], check=False).returncode == 0
