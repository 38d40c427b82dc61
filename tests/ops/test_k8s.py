"""ops/k8s: the Kubernetes manifests, checked offline (no cluster, no network).

- Every document parses (PyYAML). The built-in kinds (StatefulSet, Service, ConfigMap, PodDisruptionBudget) are
  validated against the Kubernetes API's OpenAPI schemas for ``KUBE_VERSION``, as JSON schema, by
  kubernetes-validate in strict mode: a missing required field, a wrong type or an unknown (misspelled) field fails,
  as ``kubectl apply --validate=strict`` would.
- The ServiceMonitor is a custom resource (prometheus-operator's monitoring.coreos.com/v1), not in those schemas. It
  is checked against ``SERVICE_MONITOR_SCHEMA`` below: the part of the operator's CRD schema
  (``monitoring.coreos.com_servicemonitors.yaml``, ``openAPIV3Schema``) that covers the fields used here, with the
  same types, enums and duration pattern, and ``additionalProperties: false`` so that a misspelled field fails
  (the API server would prune it silently). Stricter than the CRD only in refusing fields the schema leaves out.
- Cross-references: selectors match the pod labels, ``serviceName`` is the headless Service, the port names and
  numbers agree between the pod, the Services, the ServiceMonitor and the entry script's settings, the probes are the
  admin port's ``/v1/status/*`` routes that the admin API serves, the grace period covers the preStop bound and the
  broker's shutdown, every broker setting in the ConfigMap exists, every admin call the hooks make is a route.
- The entry script (configmap.yaml's ``entrypoint.sh``), given the environment the kubelet gives pod rafka-2, execs
  the flags of node 3 of a three-voter cluster, which the broker's own config loader accepts.
- The pod run locally: the StatefulSet's command and environment as the kubelet would give them to rafka-0 (downward
  API values, the ConfigMap's keys, its scripts at their mount path), with only the addresses, ports and paths moved
  to 127.0.0.1 and a temporary directory, and a quorum of one. The node gets ready, a confluent-kafka client produces
  to and consumes from both shards through their advertised listeners, the preStop hook puts the brokers in
  maintenance, SIGTERM stops the node with exit 0, and after a restart the postStart hook ends the maintenance.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import psutil
import pytest
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition

from bench.chaos.cluster import wait_gone
from rafka_shards.admin.app import ROUTES
from rafka_shards.cli import _parser
from rafka_shards.config import load_config, settings
from tests.conftest import free_port_range

K8S = Path(__file__).resolve().parents[2] / "ops" / "k8s"
KUBE_VERSION = "1.30"  # the oldest Kubernetes these manifests are meant for (every field used is older)
NAMESPACE = "streaming"
READY_TIMEOUT_S = 180.0  # a busy 2-core machine starts a node with two shards slowly
STOP_TIMEOUT_S = 90.0  # the broker's own bound is twice RAFKA_SHUTDOWN_TIMEOUT_MS (2 x 20 s)
HOOK_TIMEOUT_S = 120.0

_DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
_LABELS: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "string"}}
SERVICE_MONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                "namespace": {"type": "string"},
                "labels": _LABELS,
                "annotations": _LABELS,
            },
        },
        "spec": {
            "type": "object",
            "required": ["selector"],  # the CRD requires only the selector (endpoints: empty scrapes nothing)
            "additionalProperties": False,
            "properties": {
                "jobLabel": {"type": "string"},
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchLabels": _LABELS},
                },
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                            "interval": {"type": "string", "pattern": _DURATION},
                            "scrapeTimeout": {"type": "string", "pattern": _DURATION},
                            "honorLabels": {"type": "boolean"},
                        },
                    },
                },
            },
        },
    },
}


# ---- reading the manifests ---------------------------------------------------------------------------------------


def documents() -> list[tuple[str, dict[str, Any]]]:
    """(file name, document) for every document of every manifest (kustomization.yaml is not a resource)."""
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            assert isinstance(doc, dict), f"{path.name}: a document that is not a mapping"
            out.append((path.name, doc))
    return out


def resource(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for _, d in documents() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def statefulset() -> dict[str, Any]:
    return resource("StatefulSet")


def container() -> dict[str, Any]:
    containers = statefulset()["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    c: dict[str, Any] = containers[0]
    return c


def configmap_data(name: str) -> dict[str, str]:
    data: dict[str, str] = resource("ConfigMap", name)["data"]
    return data


def pod_labels() -> dict[str, str]:
    labels: dict[str, str] = statefulset()["spec"]["template"]["metadata"]["labels"]
    return labels


def services() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in documents() if d["kind"] == "Service"}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# ---- what the kubelet would do -----------------------------------------------------------------------------------


_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)|\$\$")


def expand(text: str, env: dict[str, str]) -> str:
    """The kubelet's ``$(VAR)`` expansion in env values, command and args: a defined VAR is replaced, ``$$`` is ``$``,
    anything else is left as written."""

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR_REF.sub(one, text)


def pod_env(pod_name: str, namespace: str = NAMESPACE) -> dict[str, str]:
    """The container's environment as the kubelet builds it for ``pod_name``: envFrom's ConfigMaps first, then env in
    order (fieldRef from the pod's metadata; an optional Secret that does not exist gives nothing)."""
    c = container()
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        assert set(source) == {"configMapRef"}, source
        env.update(configmap_data(source["configMapRef"]["name"]))
    fields = {"metadata.name": pod_name, "metadata.namespace": namespace}
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = expand(e["value"], env)
            continue
        ref = e["valueFrom"]
        if "fieldRef" in ref:
            env[e["name"]] = fields[ref["fieldRef"]["fieldPath"]]
        else:
            assert ref["secretKeyRef"].get("optional") is True, f"{e['name']}: a required Secret"
    return env


def mount_scripts(root: Path) -> dict[str, Path]:
    """Write each ConfigMap volume's keys as files under ``root``, as the kubelet mounts them: {mountPath: dir}."""
    volumes = {v["name"]: v for v in statefulset()["spec"]["template"]["spec"]["volumes"]}
    mounts = {}
    for m in container()["volumeMounts"]:
        volume = volumes.get(m["name"])
        if volume is None or "configMap" not in volume:
            continue
        target = root / m["name"]
        target.mkdir(parents=True)
        for key, text in configmap_data(volume["configMap"]["name"]).items():
            (target / key).write_text(text)
        mounts[m["mountPath"]] = target
    return mounts


def localize(argv: list[str], mounts: dict[str, Path], env: dict[str, str]) -> list[str]:
    """``argv`` as written in the manifest, expanded, with the mounted files' paths moved to where they are here."""
    out = []
    for arg in argv:
        arg = expand(arg, env)
        for mount_path, local in mounts.items():
            if arg.startswith(mount_path.rstrip("/") + "/"):
                arg = str(local) + arg[len(mount_path.rstrip("/")) :]
        out.append(arg)
    return out


def container_argv() -> list[str]:
    c = container()
    return [*c["command"], *c.get("args", [])]


def hook_argv(hook: str) -> list[str]:
    argv: list[str] = container()["lifecycle"][hook]["exec"]["command"]
    return argv


def script(name: str) -> str:
    return configmap_data("rafka-scripts")[name]


# ---- schemas -----------------------------------------------------------------------------------------------------


def test_every_document_matches_its_schema() -> None:
    docs = documents()
    assert {d["kind"] for _, d in docs} == {
        "ConfigMap",
        "Service",
        "StatefulSet",
        "PodDisruptionBudget",
        "ServiceMonitor",
    }
    for name, doc in docs:
        if doc["kind"] == "ServiceMonitor":
            jsonschema.validate(doc, SERVICE_MONITOR_SCHEMA)
        else:
            try:
                kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{name}: {doc['kind']} {doc['metadata']['name']}: {e.message} at {list(e.path)}")


def test_the_schemas_catch_mistakes() -> None:
    """The validation is not vacuous: a misspelled field, a wrong type, a missing required field are refused."""
    sts = statefulset()
    typo = json.loads(json.dumps(sts))
    typo["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    wrong_type = json.loads(json.dumps(sts))
    wrong_type["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "9092x"
    missing = json.loads(json.dumps(sts))
    del missing["spec"]["selector"]
    for bad in (typo, wrong_type, missing):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(bad, KUBE_VERSION, strict=True)
    monitor = json.loads(json.dumps(resource("ServiceMonitor")))
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(monitor, SERVICE_MONITOR_SCHEMA)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return  # the build itself is checked where kubectl is installed (it embeds kustomize)
    built = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=True)
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(built.stdout))
    assert kinds == sorted(d["kind"] for _, d in documents())


# ---- cross-references --------------------------------------------------------------------------------------------


def test_selectors_and_service_names_agree() -> None:
    sts = statefulset()
    labels = pod_labels()
    assert selects(sts["spec"]["selector"]["matchLabels"], labels)
    svcs = services()
    headless = svcs[sts["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True  # peers resolve before they are ready
    for svc in svcs.values():
        assert selects(svc["spec"]["selector"], labels), svc["metadata"]["name"]
    pdb = resource("PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert selects(pdb["spec"]["selector"]["matchLabels"], labels)
    env = pod_env("rafka-0")
    assert env["RAFKA_K8S_HEADLESS_SERVICE"] == headless["metadata"]["name"]
    assert env["RAFKA_K8S_CLIENT_SERVICE"] in svcs
    assert svcs[env["RAFKA_K8S_CLIENT_SERVICE"]]["spec"].get("clusterIP") != "None"
    # The whole quorum starts at once (OrderedReady would wait for rafka-0's readiness, which needs a majority).
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    # A Service named rafka would put RAFKA_PORT and the like into the broker's RAFKA_<NAME> settings.
    assert sts["spec"]["template"]["spec"]["enableServiceLinks"] is False
    # The ServiceMonitor scrapes through the headless Service only (every pod once, ready or not).
    monitor = resource("ServiceMonitor")
    scraped = [
        n for n, s in svcs.items() if selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
    ]
    assert scraped == [headless["metadata"]["name"]]
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {p["name"] for p in headless["spec"]["ports"]}


def test_ports_cover_every_shard_and_agree() -> None:
    env = pod_env("rafka-0")
    shards = int(env["RAFKA_SHARDS"])
    kafka, admin, raft = (int(env[f"RAFKA_K8S_{p}_PORT"]) for p in ("KAFKA", "ADMIN", "RAFT"))
    expected = {f"kafka-{i}": kafka + i for i in range(shards)} | {"admin": admin, "raft": raft}
    pod_ports = {p["name"]: p["containerPort"] for p in container()["ports"]}
    assert pod_ports == expected
    svcs = services()
    headless = svcs[statefulset()["spec"]["serviceName"]]
    assert {p["name"]: p["port"] for p in headless["spec"]["ports"]} == expected
    for svc in svcs.values():
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in pod_ports, (svc["metadata"]["name"], p)
            assert p["port"] == pod_ports[p["targetPort"]], (svc["metadata"]["name"], p)
    assert {"kafka-0", "admin"} <= {p["name"] for p in svcs[env["RAFKA_K8S_CLIENT_SERVICE"]]["spec"]["ports"]}


def test_probes_are_the_admin_apis_status_routes() -> None:
    c = container()
    served = {(r.method, r.path) for r in ROUTES}
    paths = {
        "readinessProbe": "/v1/status/ready",
        "livenessProbe": "/v1/status/live",
        "startupProbe": "/v1/status/live",
    }
    for probe, path in paths.items():
        get = c[probe]["httpGet"]
        assert (get["path"], get["port"]) == (path, "admin"), probe
        assert ("GET", path) in served
    monitor = resource("ServiceMonitor")
    assert {e["path"] for e in monitor["spec"]["endpoints"]} == {"/metrics"}
    assert ("GET", "/metrics") in served


def test_hooks_call_only_routes_the_admin_api_serves() -> None:
    served = {(r.method, r.path) for r in ROUTES}
    calls = re.findall(r'call\("(\w+)", f"\{(?:admin\(\)|service)\}(/v1/[^"]*)"', script("lifecycle.py"))
    used = {(method, re.sub(r"\{\w+\}", "{id}", path)) for method, path in calls}
    assert ("PUT", "/v1/brokers/{id}/maintenance") in used
    assert ("DELETE", "/v1/brokers/{id}/maintenance") in used
    assert ("POST", "/v1/controller/voters/{id}") in used
    assert used <= served, used - served


def test_grace_period_covers_prestop_and_shutdown() -> None:
    env = pod_env("rafka-0")
    prestop_s = float(env["RAFKA_K8S_PRESTOP_TIMEOUT_S"])
    # The supervisor waits shutdown_timeout_ms for the shards, then as long for the controller process.
    shutdown_s = 2 * int(env["RAFKA_SHUTDOWN_TIMEOUT_MS"]) / 1000
    grace_s = statefulset()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace_s >= prestop_s + shutdown_s + 10


def test_volumes_scripts_and_settings_agree() -> None:
    sts = statefulset()
    c = container()
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    claims = [t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]]
    assert claims == ["data"]
    env = pod_env("rafka-0")
    assert env["RAFKA_K8S_STATE_DIR"] == mounts["data"]
    assert Path(env["RAFKA_DATA_DIR"]).parent == Path(mounts["data"])  # not the volume's root (lost+found)
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    scripts = volumes["scripts"]["configMap"]["name"]
    keys = set(configmap_data(scripts))
    for argv in (container_argv(), hook_argv("preStop"), hook_argv("postStart")):
        files = [a for a in argv if a.startswith(mounts["scripts"] + "/")]
        assert files, argv
        assert {f.removeprefix(mounts["scripts"] + "/") for f in files} <= keys
    # Every broker setting in the ConfigMap is one the broker has (a typo would be silently ignored).
    known = {"RAFKA_" + f.name.upper() for f in settings()}
    broker_keys = {k for k in configmap_data("rafka-env") if not k.startswith("RAFKA_K8S_")}
    assert broker_keys <= known, broker_keys - known
    assert all(isinstance(v, str) for v in configmap_data("rafka-env").values())


def test_scripts_pass_their_linters(tmp_path: Path) -> None:
    entry = tmp_path / "entrypoint.sh"
    entry.write_text(script("entrypoint.sh"))
    subprocess.run(["sh", "-n", str(entry)], check=True, timeout=30)
    if shutil.which("shellcheck") is not None:
        subprocess.run(["shellcheck", "-s", "sh", str(entry)], check=True, timeout=60)
    hooks = tmp_path / "lifecycle.py"
    hooks.write_text(script("lifecycle.py"))
    compile(hooks.read_text(), str(hooks), "exec")
    repo = K8S.parents[1]
    ruff = [sys.executable, "-m", "ruff"]
    subprocess.run([*ruff, "check", "--config", str(repo / "pyproject.toml"), str(hooks)], check=True, timeout=60)
    subprocess.run(
        [*ruff, "format", "--check", "--config", str(repo / "pyproject.toml"), str(hooks)], check=True, timeout=60
    )


# ---- the entry script --------------------------------------------------------------------------------------------


def run_entrypoint(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    """Run entrypoint.sh as the container's command with a stand-in ``python`` that prints its arguments."""
    mounts = mount_scripts(tmp_path / "mounts")
    stub = tmp_path / "bin"
    stub.mkdir(exist_ok=True)
    (stub / "python").write_text('#!/bin/sh\nfor a in "$@"; do printf \'%s\\0\' "$a"; done\n')
    (stub / "python").chmod(0o755)
    argv = localize(container_argv(), mounts, env)
    return subprocess.run(argv, env={**env, "PATH": f"{stub}:/usr/bin:/bin"}, capture_output=True, timeout=30)


def test_entrypoint_renders_a_cluster_nodes_flags(tmp_path: Path) -> None:
    env = pod_env("rafka-2")
    done = run_entrypoint(tmp_path, env)
    assert done.returncode == 0, done.stderr.decode()
    argv = done.stdout.decode().split("\0")[:-1]
    d = f"rafka-headless.{NAMESPACE}.svc.cluster.local"
    assert argv == [
        "-m",
        "rafka_shards",
        "serve",
        "--node-id",
        "3",
        "--broker-id",
        "200",
        "--listen",
        "0.0.0.0:9092",
        "--advertise",
        f"rafka-2.{d}:9092",
        "--admin-listen",
        "0.0.0.0:9644",
        "--controller-listen",
        "0.0.0.0:9645",
        "--controller-voters",
        f"1@rafka-0.{d}:9645,2@rafka-1.{d}:9645,3@rafka-2.{d}:9645",
        "--controller-peers",
        ",".join(f"{n}@rafka-{n - 1}.{d}:9645" for n in range(4, 8)),
    ]
    # The broker accepts them, with the pod's environment (RAFKA_SHARDS=2, ...), as its own CLI would.
    args = _parser().parse_args(argv[2:])
    config = load_config({f.name: getattr(args, f.name) for f in settings()}, environ=env)
    assert config.shard_count == 2
    voters, known = config.controller_addresses()
    assert sorted(voters) == [1, 2, 3]
    assert sorted(known) == list(range(1, 8))
    assert str(config.advertise_endpoint) == f"rafka-2.{d}:9092"


@pytest.mark.parametrize(
    ("pod", "changes", "why"),
    [
        ("rafka", {}, "has no StatefulSet ordinal"),
        ("rafka-7", {}, "beyond RAFKA_K8S_NODES_MAX=7"),
        ("rafka-0", {"RAFKA_SHARDS": "auto"}, "RAFKA_SHARDS"),
        ("rafka-0", {"RAFKA_SHARDS": "101"}, "RAFKA_SHARDS must be in"),
        ("rafka-0", {"RAFKA_K8S_HOST_OVERRIDE": "127.0.0.1"}, "for a single node"),
    ],
)
def test_entrypoint_refuses_what_it_cannot_place(tmp_path: Path, pod: str, changes: dict[str, str], why: str) -> None:
    done = run_entrypoint(tmp_path, {**pod_env(pod), **changes})
    assert done.returncode == 2
    assert why in done.stderr.decode()
    assert done.stdout == b""  # the broker was not started


class StandInAdmin(http.server.BaseHTTPRequestHandler):
    """The admin API of a node that becomes ready only once some node has asked the cluster to add it as a voter:
    answers what ``lifecycle.py`` asks, records every call."""

    calls: list[tuple[str, str]] = []
    joined = False

    def _answer(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _any(self) -> None:
        cls = type(self)
        cls.calls.append((self.command, self.path))
        if (self.command, self.path) == ("POST", "/v1/controller/voters/4"):
            cls.joined = True
            self._answer(200, {"voter": 4, "voters": [1, 2, 3, 4]})
        elif (self.command, self.path) == ("GET", "/v1/status/ready"):
            self._answer(*((200, {"status": "ready"}) if cls.joined else (503, {"error": "not_ready"})))
        else:
            self._answer(404, {"error": "not_found"})

    do_GET = do_POST = do_PUT = do_DELETE = _any

    def log_message(self, format: str, *args: Any) -> None:  # quiet: failures show in the assertions
        pass


def test_post_start_joins_a_node_beyond_the_first_voters(tmp_path: Path) -> None:
    """Pod rafka-3 (node 4; voters are nodes 1-3) asks the cluster, through the client Service, to add it, until the
    node is ready; with no note from preStop it changes nothing else. The admin API is a stand-in here (the join
    needs a cluster of several nodes, which the local run below is not)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StandInAdmin)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env = pod_env("rafka-3")
        env |= {
            "RAFKA_K8S_ADMIN_PORT": str(server.server_address[1]),
            "RAFKA_K8S_CLIENT_SERVICE": "127.0.0.1",  # the Service's name resolves in the cluster only
            "RAFKA_K8S_STATE_DIR": str(tmp_path),
            "RAFKA_K8S_HOOK_LOG": str(tmp_path / "hooks.log"),
            "RAFKA_K8S_POSTSTART_TIMEOUT_S": "60",
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        }
        mounts = mount_scripts(tmp_path / "mounts")
        done = subprocess.run(localize(hook_argv("postStart"), mounts, env), env=env, capture_output=True, timeout=90)
        assert done.returncode == 0, done.stderr.decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    assert ("POST", "/v1/controller/voters/4") in StandInAdmin.calls
    assert StandInAdmin.calls[-1] == ("GET", "/v1/status/ready")  # ready: nothing noted, so nothing to undo
    assert "post-start: add node 4 to the quorum: 200" in (tmp_path / "hooks.log").read_text()


# ---- the pod, run locally ----------------------------------------------------------------------------------------


def admin_call(port: int, method: str, path: str) -> tuple[int, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError as e:
        return 0, str(e)


class Pod:
    """The StatefulSet's container for one pod, run here: its command, its environment, its hooks."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.env = env
        self.mounts = mount_scripts(root / "mounts")
        self.log_path = root / "pod.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.tree: list[psutil.Process] = []

    @property
    def admin_port(self) -> int:
        return int(self.env["RAFKA_K8S_ADMIN_PORT"])

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                localize(container_argv(), self.mounts, self.env),
                env=self.env,
                cwd=self.root,  # the image's WORKDIR is the data volume
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the pod's process exited with {self.proc.returncode}:\n{self.log()}"
            if admin_call(self.admin_port, "GET", "/v1/status/ready")[0] == 200:
                self.tree = [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]
                return
            time.sleep(0.2)
        pytest.fail(f"not ready within {READY_TIMEOUT_S} s:\n{self.log()}")

    def hook(self, hook: str) -> None:
        argv = localize(hook_argv(hook), self.mounts, self.env)
        done = subprocess.run(argv, env=self.env, cwd=self.root, capture_output=True, timeout=HOOK_TIMEOUT_S)
        assert done.returncode == 0, done.stderr.decode()

    def stop(self) -> int:
        """SIGTERM, as the kubelet sends it after preStop; the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(STOP_TIMEOUT_S)
        alive = wait_gone(self.tree, timeout_s=10)
        assert not alive, f"processes outlived the node: {[p.pid for p in alive]}"
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(STOP_TIMEOUT_S)


@pytest.fixture
def local_pod(tmp_path: Path) -> Iterator[Pod]:
    """Pod rafka-0 as rendered from the manifests, moved to this machine: what differs from the cluster is the
    listen address and advertised host (127.0.0.1), free ports, the paths (a temporary directory), a quorum of one,
    and where the hooks log. Each of these keys is one the manifest sets (or the script's documented override)."""
    env = pod_env("rafka-0")
    shards = int(env["RAFKA_SHARDS"])
    base = free_port_range(shards + 2)
    local = {
        "RAFKA_K8S_BIND_HOST": "127.0.0.1",
        "RAFKA_K8S_HOST_OVERRIDE": "127.0.0.1",
        "RAFKA_K8S_VOTERS": "1",
        "RAFKA_K8S_NODES_MAX": "1",
        "RAFKA_K8S_KAFKA_PORT": str(base),
        "RAFKA_K8S_ADMIN_PORT": str(base + shards),
        "RAFKA_K8S_RAFT_PORT": str(base + shards + 1),
        "RAFKA_DATA_DIR": str(tmp_path / "volume" / "data"),
        "RAFKA_K8S_STATE_DIR": str(tmp_path / "volume"),
        "RAFKA_K8S_HOOK_LOG": str(tmp_path / "hooks.log"),
    }
    overridden = set(local) - {"RAFKA_K8S_BIND_HOST", "RAFKA_K8S_HOST_OVERRIDE", "RAFKA_K8S_HOOK_LOG"}
    assert overridden <= set(env), overridden - set(env)
    (tmp_path / "volume").mkdir()
    # PATH: the image has python on it; here, the interpreter running the tests.
    path = f"{Path(sys.executable).parent}:/usr/bin:/bin"
    pod = Pod(tmp_path, {**env, **local, "PATH": path})
    try:
        yield pod
    finally:
        pod.kill()


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_the_pod_runs_serves_drains_and_restarts(local_pod: Pod) -> None:
    pod = local_pod
    pod.start()
    pod.wait_ready()
    port = int(pod.env["RAFKA_K8S_KAFKA_PORT"])
    status, brokers = admin_call(pod.admin_port, "GET", "/v1/brokers")
    assert status == 200
    # Both shards registered with the addresses the entry script advertised.
    assert [(b["broker_id"], b["host"], b["port"]) for b in brokers] == [
        (0, "127.0.0.1", port),
        (1, "127.0.0.1", port + 1),
    ]

    # One partition on each shard (placement balances them), so both advertised listeners are used.
    request = urllib.request.Request(
        f"http://127.0.0.1:{pod.admin_port}/v1/topics",
        data=json.dumps({"name": "k8s", "partitions": 2, "replication_factor": 1}).encode(),
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as r:
        assert r.status == 201
    leaders = {admin_call(pod.admin_port, "GET", f"/v1/partitions/k8s/{p}")[1]["leader"] for p in (0, 1)}
    assert leaders == {0, 1}
    producer = Producer({"bootstrap.servers": f"127.0.0.1:{port}", "acks": "all", "message.timeout.ms": 60000})
    delivered: list[tuple[int, int]] = []

    def on_delivery(err: Any, msg: Any) -> None:
        assert err is None, err
        delivered.append((msg.partition(), msg.offset()))

    for p in (0, 1):
        producer.produce(
            "k8s", key=b"k", value=f"from pod rafka-0 to partition {p}".encode(), partition=p, on_delivery=on_delivery
        )
    assert producer.flush(60) == 0
    assert sorted(delivered) == [(0, 0), (1, 0)]
    consumer = Consumer({"bootstrap.servers": f"127.0.0.1:{port}", "group.id": "k8s", "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition("k8s", p, 0) for p in (0, 1)])
        got: dict[int, bytes] = {}
        deadline = time.monotonic() + 60
        while len(got) < 2 and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                partition, value = msg.partition(), msg.value()
                assert partition is not None and value is not None
                got[partition] = value
        assert got == {p: f"from pod rafka-0 to partition {p}".encode() for p in (0, 1)}
    finally:
        consumer.close()

    # preStop: the node's brokers go into maintenance (a quorum of one has nowhere to move leadership: the hook's
    # wait ends once the leader count stops changing), and the hook notes what it started.
    pod.hook("preStop")
    status, brokers = admin_call(pod.admin_port, "GET", "/v1/brokers")
    assert [b["status"] for b in brokers] == ["maintenance", "maintenance"]
    note = Path(pod.env["RAFKA_K8S_STATE_DIR"]) / "prestop-maintenance.json"
    assert json.loads(note.read_text()) == {"maintenance": [0, 1]}
    code = pod.stop()
    assert code == 0, f"exit {code} on SIGTERM:\n{pod.log()}"

    # The pod comes back (same volume): postStart ends the maintenance preStop started.
    pod.start()
    pod.wait_ready()
    pod.hook("postStart")
    status, brokers = admin_call(pod.admin_port, "GET", "/v1/brokers")
    assert [b["status"] for b in brokers] == ["active", "active"]
    assert not note.exists()
    hooks_log = Path(pod.env["RAFKA_K8S_HOOK_LOG"]).read_text()
    assert "pre-stop: maintenance of broker 0: 200" in hooks_log
    assert "post-start: end maintenance of broker 1: 200" in hooks_log
    code = pod.stop()
    assert code == 0, f"exit {code} on SIGTERM:\n{pod.log()}"
