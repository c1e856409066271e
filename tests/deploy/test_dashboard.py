"""The Grafana dashboard: stable identity, datasource and bridge_id variables, contract metrics."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from tests.deploy.conftest import CHART, REPO
from tests.deploy.contract import CONTRACT_SERIES
from tests.deploy.promql import metric_names

DASHBOARD = REPO / "deploy" / "grafana" / "presence-bridge.json"
CHART_DASHBOARD = CHART / "files" / "dashboard.json"
UID = "presence-bridge"
REQUIRED_SERIES = CONTRACT_SERIES - {
    # Only as _bucket: quantiles need nothing else.
    "bridge_event_delivery_seconds_sum",
    "bridge_event_delivery_seconds_count",
    "bridge_event_lag_seconds_sum",
    "bridge_event_lag_seconds_count",
}


def load() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def expressions(dashboard: dict[str, Any]) -> Iterator[str]:
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield target["expr"]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"]
            yield query.removeprefix("label_values(").rsplit(",", 1)[0]


def test_one_source_shared_with_the_chart() -> None:
    """deploy/grafana/presence-bridge.json is a link to the chart's file."""
    assert DASHBOARD.is_symlink()
    assert DASHBOARD.resolve() == CHART_DASHBOARD.resolve()


def test_valid_json_with_a_stable_uid() -> None:
    """Parses, and keeps the uid that links and the sidecar rely on."""
    dashboard = load()
    assert dashboard["uid"] == UID
    assert dashboard["title"]
    assert "id" not in dashboard or dashboard["id"] is None, "a fixed id clashes on import"


def test_datasource_variable_used_everywhere() -> None:
    """A Prometheus `datasource` variable, and every panel and target uses it."""
    variables = {v["name"]: v for v in load()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    dashboard = load()
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
    for var in variables.values():
        if var["type"] == "query":
            assert var["datasource"]["uid"] == "${datasource}"


def test_panel_ids_and_positions_are_unique() -> None:
    """Unique panel ids; no two panels overlap on the grid."""
    all_panels = list(panels(load()))
    ids = [p["id"] for p in all_panels]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in all_panels:
        g = p["gridPos"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"{p['title']} overlaps another panel"
        assert g["x"] + g["w"] <= 24
        cells |= mine


def test_expressions_use_only_contract_metrics() -> None:
    """Every expression references contract series (README "Metrics") only."""
    for expr in expressions(load()):
        names = metric_names(expr)
        assert names, expr
        assert names <= CONTRACT_SERIES, f"{expr}: {names - CONTRACT_SERIES}"


def test_every_contract_metric_is_on_the_dashboard() -> None:
    """Nothing the worker exports for operators is left off the dashboard."""
    used: set[str] = set()
    for expr in expressions(load()):
        used |= metric_names(expr)
    assert used >= REQUIRED_SERIES, REQUIRED_SERIES - used


def test_the_panels_the_issue_asks_for() -> None:
    """Changes by kind, latency p50/p99, shards owned vs connected, and the rest."""
    titles = {p["title"] for p in panels(load())}
    for wanted in (
        "Changes/s by kind",
        "Records produced/s by topic",
        "Delivery latency p50 / p99",
        "Event lag p50 / p99",
        "Shards owned vs connected",
        "Heartbeat age by shard",
        "Time to channel expiry by shard",
        "Connects by reason",
        "Rotations by reason",
        "Genesys requests by status and rate limiting",
        "DLQ records by reason",
        "Roster vs unassigned agents",
        "Fenced writes",
    ):
        assert wanted in titles
    latency = next(p for p in panels(load()) if p["title"] == "Delivery latency p50 / p99")
    exprs = [t["expr"] for t in latency["targets"]]
    assert any(e.startswith("histogram_quantile(0.5,") for e in exprs)
    assert any(e.startswith("histogram_quantile(0.99,") for e in exprs)
    assert all("bridge_event_delivery_seconds_bucket" in e for e in exprs)


def test_one_fleet_at_a_time_through_the_bridge_id_variable() -> None:
    """A single-choice `bridge_id` variable, and every panel query selects on it."""
    dashboard = load()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    bridge_id = variables["bridge_id"]
    assert bridge_id["type"] == "query"
    assert bridge_id["query"]["query"].startswith("label_values(bridge_build_info{")
    assert bridge_id["query"]["query"].endswith(", bridge_id)")
    assert bridge_id["multi"] is False and bridge_id["includeAll"] is False, "fleets are never summed"
    targets = [t["expr"] for p in panels(dashboard) for t in p.get("targets", [])]
    assert targets
    for expr in targets:
        for name in metric_names(expr):
            matchers = re.findall(rf"\b{name}(\{{[^}}]*\}})?", expr)
            assert matchers, expr
            for m in matchers:
                assert 'bridge_id=~"$bridge_id"' in m, f"{name} in {expr!r} ignores $bridge_id"
