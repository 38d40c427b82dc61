"""What the monitoring files name, and what a node's ``/metrics`` exports: metric names in PromQL expressions (the
dashboard's and the alerts'), and the sample names of a Prometheus text exposition."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "ops" / "grafana" / "rafka.json"
ALERTS = ROOT / "ops" / "prometheus" / "alerts.yml"
ALERTS_TEST = ROOT / "ops" / "prometheus" / "alerts_test.yml"
PROMETHEUS_CONFIG = ROOT / "ops" / "prometheus" / "prometheus.yml"

PROMETHEUS_OWN = frozenset({"up"})  # series Prometheus makes itself for every target

# Words of PromQL that look like metric names: binary operators, modifiers, and the values of the number grammar.
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "inf", "nan", "by", "without", "on", "ignoring", "group_left"}
    | {"group_right", "atan2"}
)
# A clause whose parentheses hold label names, not expressions.
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_IDENTIFIER = re.compile(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")
# Grafana's variables in an expression: $name, ${name}, [[name]].
_GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[\w+\]\]")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers that are not functions or aggregations (followed by
    ``(``), keywords, label names (in ``{...}`` matchers or ``by (...)``-style lists), durations or strings."""
    text = _GRAFANA_VARIABLE.sub("1m", expr)
    text = _STRING.sub('""', text)
    text = re.sub(r"\{[^{}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\[\]]*\]", " ", text)  # ranges and subqueries
    text = _LABEL_LIST.sub(" ", text)
    names = set()
    for m in _IDENTIFIER.finditer(text):
        word, call = m.group(1), m.group(2)
        if call is None and word.lower() not in _KEYWORDS:
            names.add(word)
    # A matcher on __name__ names a metric too: {__name__="x"}.
    names.update(re.findall(r'__name__\s*=\s*"([^"]+)"', expr))
    return names


def exported_names(exposition: str) -> set[str]:
    """The names ``/metrics`` serves: every sample's, and for a family declared with no sample yet (a gauge family
    with no labels values now) the names its samples will have: ``_bucket``, ``_sum`` and ``_count`` only for
    histograms (and ``_sum``/``_count`` for summaries), never for a counter or gauge."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            suffixes = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count")}
            names.update(name + s for s in suffixes.get(kind, ("",)))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


def dashboard_expressions() -> list[tuple[str, str]]:
    """(panel title, expression) of every query of the dashboard, its template variables' included."""
    dashboard = json.loads(DASHBOARD.read_text())
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            found.append((panel["title"], target["expr"]))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", text.strip())
            found.append((f"variable {variable['name']}", inner.group(1) if inner else text))
    return found


def alert_names() -> list[str]:
    """The alerts of alerts.yml, in order (each rule starts with ``- alert: Name``)."""
    return re.findall(r"^\s*- alert:\s*(\w+)\s*$", ALERTS.read_text(), flags=re.MULTILINE)


def alerts_under_test() -> tuple[set[str], set[str]]:
    """The alerts alerts_test.yml expects firing at some evaluation, and those it expects not firing at another:
    each ``alertname:`` line of a test is followed by its ``exp_alerts:``, empty (``[]``) or a list."""
    firing: set[str] = set()
    quiet: set[str] = set()
    current = None
    for line in ALERTS_TEST.read_text().splitlines():
        if m := re.match(r"\s*alertname:\s*(\w+)", line):
            current = m.group(1)
        elif (m := re.match(r"\s*exp_alerts:\s*(.*?)\s*(#.*)?$", line)) and current is not None:
            (quiet if m.group(1) == "[]" else firing).add(current)
            current = None
    return firing, quiet


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120, cwd=ROOT)
