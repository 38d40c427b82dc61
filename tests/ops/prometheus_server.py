"""A real ``prometheus`` process for tests: its own config and rule files in a temporary directory, its HTTP API on a
free port of 127.0.0.1, stopped (and killed if need be) when the test ends."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port_range
from tests.ops.promql import ALERTS

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0


def require_prometheus() -> None:
    """Skip with the reason when the Debian package is missing (ops/test.sh installs it)."""
    for tool in ("prometheus", "promtool"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (Debian package 'prometheus'; bash ops/test.sh installs it)")


def rules_with_for(duration: str) -> str:
    """alerts.yml with every ``for:`` set to ``duration``: the same expressions, fired within a test's patience."""
    text, count = re.subn(r"^(\s*)for:\s*\S+\s*$", rf"\g<1>for: {duration}", ALERTS.read_text(), flags=re.MULTILINE)
    assert count > 0, "no for: in alerts.yml"
    return text


class Prometheus:
    def __init__(self, directory: Path, rules: str, targets: list[str]) -> None:
        self.directory = directory
        self.port = free_port_range(1)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "alerts.yml").write_text(rules)
        config = {
            # Scrapes every 2 s, each with up to 2 s for a node's answer (a loaded machine renders /metrics slowly; a
            # killed node refuses at once); rules evaluated every second.
            "global": {"scrape_interval": "2s", "scrape_timeout": "2s", "evaluation_interval": "1s"},
            "rule_files": ["alerts.yml"],
            "scrape_configs": [{"job_name": "rafka", "static_configs": [{"targets": targets}]}] if targets else [],
        }
        (directory / "prometheus.yml").write_text(json.dumps(config, indent=2))  # JSON is YAML
        self.log_path = directory / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    "prometheus",
                    f"--config.file={self.directory / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.directory / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=info",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for("prometheus ready", self._ready, START_TIMEOUT_S, self.log)

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited with {self.proc.returncode}:\n{self.log()}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def api(self, path: str) -> Any:
        """The ``data`` of a successful HTTP API answer."""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}", timeout=10) as r:
            answer = json.loads(r.read())
        assert answer["status"] == "success", answer
        return answer["data"]

    def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return alerts

    def log(self, tail: int = 5000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextmanager
def running_prometheus(directory: Path, rules: str, targets: list[str]) -> Iterator[Prometheus]:
    prometheus = Prometheus(directory, rules, targets)
    try:
        prometheus.start()
        yield prometheus
    finally:
        prometheus.stop()


def wait_for(what: str, check: Callable[[], bool], timeout_s: float, details: Callable[[], str] | None = None) -> None:
    """Poll ``check`` every 0.2 s until it holds; fail with ``details()`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s\n{details() if details else ''}")
        time.sleep(0.2)
