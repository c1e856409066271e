"""Alert rules: promtool checks and unit tests, contract metrics, runbook links."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import CHART, REPO, run_tool
from tests.deploy.contract import CONTRACT_SERIES
from tests.deploy.promql import metric_names

ALERTS = REPO / "deploy" / "prometheus" / "alerts.yaml"
ALERTS_TEST = REPO / "deploy" / "prometheus" / "alerts.test.yaml"
CHART_ALERTS = CHART / "files" / "alerts.yaml"
RUNBOOK = REPO / "deploy" / "RUNBOOK.md"
RUNBOOK_URL = "https://github.com/presence-bridge/presence-bridge/blob/main/deploy/RUNBOOK.md"
EXPECTED_ALERTS = {
    "BridgeDown",
    "BridgeShardDisconnected",
    "BridgeHeartbeatStale",
    "BridgeKafkaDeliveryFailing",
    "BridgeDeliveryLatencyHigh",
    "BridgeRateLimited",
    "BridgeRosterUnassigned",
    "BridgeDLQGrowing",
    "BridgeFenced",
}
#: Prometheus's own series: a worker that is down exports nothing else.
PROMETHEUS_SERIES = {"up"}


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_one_source_shared_with_the_chart() -> None:
    """deploy/prometheus/alerts.yaml is a link to the chart's file, not a copy that can drift."""
    assert ALERTS.is_symlink(), "deploy/prometheus/alerts.yaml must link to the chart's files/alerts.yaml"
    assert ALERTS.resolve() == CHART_ALERTS.resolve()
    assert not CHART_ALERTS.is_symlink()


def test_promtool_check_rules(promtool: Path) -> None:
    """The rule file is valid for Prometheus."""
    run_tool(promtool, "check", "rules", ALERTS)


def test_promtool_unit_tests(promtool: Path) -> None:
    """Every alert fires at its `for:` boundary and not one evaluation before."""
    out = run_tool(promtool, "test", "rules", ALERTS_TEST)
    assert "SUCCESS" in out.stdout + out.stderr


def test_every_alert_has_a_boundary_unit_test() -> None:
    """alerts.test.yaml checks each alert both before and at start + for."""
    doc = yaml.safe_load(ALERTS_TEST.read_text())
    seen: dict[str, list[bool]] = {}
    for test in doc["tests"]:
        for case in test.get("alert_rule_test", []):
            seen.setdefault(case["alertname"], []).append(bool(case.get("exp_alerts")))
    assert set(seen) == EXPECTED_ALERTS
    for name, outcomes in seen.items():
        assert True in outcomes and False in outcomes, f"{name} needs a not-yet and a firing case"


def test_the_expected_alerts_exist() -> None:
    """Exactly the Bridge* alerts of the issue."""
    assert {rule["alert"] for rule in rules()} == EXPECTED_ALERTS


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r["alert"])
def test_alert_shape(rule: dict[str, Any]) -> None:
    """Severity, static summary, templated description, explicit `for:`, runbook anchor."""
    assert rule["labels"]["severity"] in {"critical", "warning"}
    annotations = rule["annotations"]
    assert "{{" not in annotations["summary"], "summary must be static (it groups notifications)"
    assert "{{" in annotations["description"], "description must say which target/shard"
    assert "for" in rule, "state the for: duration explicitly"
    assert re.fullmatch(r"\d+[smh]", rule["for"])
    assert annotations["runbook_url"] == f"{RUNBOOK_URL}#{rule['alert'].lower()}"


def test_every_for_is_justified_in_a_comment() -> None:
    """Each rule's comment block explains its `for:` duration."""
    text = ALERTS.read_text()
    for rule in rules():
        block = text.split(f"- alert: {rule['alert']}\n", 1)[1].split("expr:", 1)[0]
        assert f"# for {rule['for']}:" in block, f"{rule['alert']}: no '# for {rule['for']}:' comment"


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r["alert"])
def test_alert_uses_only_contract_metrics(rule: dict[str, Any]) -> None:
    """Expressions reference contract series (and `up`) only."""
    names = metric_names(rule["expr"])
    assert names, rule["expr"]
    assert names <= CONTRACT_SERIES | PROMETHEUS_SERIES, names - CONTRACT_SERIES


def test_runbook_has_a_section_per_alert() -> None:
    """Each alert's anchor is a RUNBOOK heading with meaning, confirm and act."""
    text = RUNBOOK.read_text()
    sections = dict(re.findall(r"^## (\w+)\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL))
    assert set(sections) == EXPECTED_ALERTS
    for name, body in sections.items():
        for part in ("**Meaning.**", "**Confirm.**", "**Act.**"):
            assert part in body, f"RUNBOOK {name} lacks {part}"


#: The text every series is selected with; the chart replaces it by prometheusRule.selector.
SELECTOR = 'job="presence-bridge"'


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r["alert"])
def test_every_series_is_selected_with_the_replaceable_selector(rule: dict[str, Any]) -> None:
    """Each metric in an expression carries exactly the selector the chart substitutes."""
    expr = rule["expr"]
    for name in metric_names(expr):
        occurrences = re.findall(rf"\b{name}(\{{[^}}]*\}})?", expr)
        assert occurrences, expr
        for matchers in occurrences:
            assert matchers == "{" + SELECTOR + "}", f"{rule['alert']}: {name}{matchers}"


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r["alert"])
def test_aggregations_keep_the_fleets_apart(rule: dict[str, Any]) -> None:
    """Every `by (...)` keeps bridge_id; `without` never drops it."""
    expr = rule["expr"]
    for clause in re.findall(r"\bby\s*\(([^)]*)\)", expr):
        assert "bridge_id" in {label.strip() for label in clause.split(",")}, (
            f"{rule['alert']}: by ({clause})"
        )
    for clause in re.findall(r"\bwithout\s*\(([^)]*)\)", expr):
        assert "bridge_id" not in clause
