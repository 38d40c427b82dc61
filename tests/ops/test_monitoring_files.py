"""The monitoring files checked without a cluster: ops/prometheus/alerts.yml by promtool (syntax, and the unit tests of
alerts_test.yml, which must test every alert firing and not firing) and by a real Prometheus loading it (labels and
annotations as Prometheus parsed them); ops/prometheus/prometheus.yml by promtool; ops/grafana/rafka.json as a Grafana
dashboard; and the PromQL name extraction the live test relies on."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.ops.prometheus_server import require_prometheus, rules_with_for, running_prometheus, wait_for
from tests.ops.promql import (
    ALERTS,
    ALERTS_TEST,
    DASHBOARD,
    PROMETHEUS_CONFIG,
    alert_names,
    alerts_under_test,
    dashboard_expressions,
    exported_names,
    metric_names,
    promtool,
)

REQUIRED_ALERTS = {
    "NodeDown",
    "ControllerWithoutLeader",
    "UnderReplicatedPartitions",
    "LeaderlessPartitions",
    "FsyncLatencyHigh",
    "DiskNearlyFull",
    "ShardRestartLoop",
    "PartitionBalancerStalled",
}
# What the issue asks the dashboard to show, by the metric that shows it.
REQUIRED_DASHBOARD_METRICS = {
    "throughput": {"rafka_partition_bytes_in_total", "rafka_partition_bytes_out_total", "rafka_requests_total"},
    "latency histograms": {"rafka_request_latency_seconds_bucket"},
    "ISR shrink/expand": {"rafka_isr_shrinks_total", "rafka_isr_expands_total"},
    "under-replicated partitions": {"rafka_partitions_under_replicated"},
    "leaderless partitions": {"rafka_partitions_leaderless"},
    "consumer lag": {"rafka_group_lag"},
    "Raft term and commit lag": {"rafka_raft_term", "rafka_raft_commit_index", "rafka_raft_apply_lag"},
    "fsync latency": {"rafka_fsync_duration_seconds_bucket", "rafka_raft_fsync_seconds_bucket"},
    "process CPU and RSS per shard": {"rafka_shard_cpu_seconds_total", "rafka_shard_resident_memory_bytes"},
}


def test_promtool_accepts_the_alert_rules() -> None:
    require_prometheus()
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(REQUIRED_ALERTS)} rules found" in result.stdout


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    require_prometheus()
    result = promtool("test", "rules", str(ALERTS_TEST))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_example_scrape_config() -> None:
    require_prometheus()
    result = promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    names = alert_names()
    assert set(names) == REQUIRED_ALERTS and len(names) == len(REQUIRED_ALERTS)
    firing, quiet = alerts_under_test()
    assert REQUIRED_ALERTS - firing == set(), "alerts never expected firing in alerts_test.yml"
    assert REQUIRED_ALERTS - quiet == set(), "alerts never expected quiet in alerts_test.yml"


def test_prometheus_loads_every_alert_with_a_severity_and_a_runbook(tmp_path: Path) -> None:
    require_prometheus()
    with running_prometheus(tmp_path / "prometheus", rules_with_for("30s"), targets=[]) as prometheus:

        def loaded() -> bool:
            groups = prometheus.api("rules")["groups"]
            return sum(len(g["rules"]) for g in groups) == len(REQUIRED_ALERTS)

        wait_for("rules loaded", loaded, 30, prometheus.log)
        rules = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
    assert {r["name"] for r in rules} == REQUIRED_ALERTS
    for rule in rules:
        assert rule["type"] == "alerting"
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], rule
        anchor = re.fullmatch(r"docs/operations\.md#([a-z0-9-]+)", annotations["runbook"])
        assert anchor is not None, rule
        # The anchor is the GitHub anchor of a heading named after the alert (NodeDown -> "Node down" -> node-down).
        assert anchor.group(1) == re.sub(r"(?<!^)(?=[A-Z])", "-", rule["name"]).lower(), rule
        assert anchor.group(1) in _operations_anchors(), f"docs/operations.md has no section for {rule['name']}"


def _operations_anchors() -> set[str]:
    """GitHub's anchors of docs/operations.md's headings: lower case, spaces to dashes, punctuation dropped."""
    text = (Path(__file__).parents[2] / "docs" / "operations.md").read_text()
    headings = re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)
    return {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in headings}


def test_the_dashboard_is_a_grafana_dashboard_with_every_panel_on_the_templated_datasource() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 36
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    occupied: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in occupied, f"{panel['title']} overlaps {occupied[(x, y)]}"
                occupied[(x, y)] = panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]
            assert target["expr"].strip(), panel["title"]
            # Quantiles come from the rate of the histogram's buckets, summed by le.
            if "histogram_quantile" in target["expr"]:
                assert re.search(r"by \(([\w, ]*\b)?le\) \(rate\(\w+_bucket\{", target["expr"]), target["expr"]


def test_the_dashboard_shows_everything_the_issue_asks_for() -> None:
    named = set().union(*(metric_names(expr) for _, expr in dashboard_expressions()))
    missing = {item: sorted(metrics - named) for item, metrics in REQUIRED_DASHBOARD_METRICS.items()}
    assert {item: m for item, m in missing.items() if m} == {}


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('up{job="rafka"} == 0', {"up"}),
        (
            'histogram_quantile(0.99, sum by (job, instance, le) (rate(x_seconds_bucket{job="rafka"}[5m]))) > 0.5',
            {"x_seconds_bucket"},
        ),
        ('label_replace(increase(a_total{job="rafka"}[5m]), "shard", "controller", "", "") > 2 or b', {"a_total", "b"}),
        ('scalar(max(c{job="rafka"})) - c{job="rafka", instance=~"$instance"}', {"c"}),
        ("sum without (shard) (rate(d[$__rate_interval])) / on (instance) group_left (node) e offset 5m", {"d", "e"}),
        ('count(up{job="rafka"} == 0) or vector(1e3) unless f:recorded', {"up", "f:recorded"}),
        ('{__name__="g", job="rafka"}', {"g"}),
    ],
)
def test_metric_names_are_found_in_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_exported_names_follow_the_types_of_the_families() -> None:
    exposition = "\n".join(
        [
            "# HELP h_seconds a histogram",
            "# TYPE h_seconds histogram",
            "# TYPE c_total counter",
            'c_total{api="Produce"} 3.0',
            "# TYPE g gauge",  # a gauge family with no sample yet
            "# TYPE s summary",
        ]
    )
    names = exported_names(exposition)
    assert names == {"h_seconds_bucket", "h_seconds_sum", "h_seconds_count", "c_total", "g", "s", "s_sum", "s_count"}
    assert "c_total_count" not in names and "g_bucket" not in names
