"""Every panel of the chart's dashboard answers from a real Prometheus scraping a streaming fleet.

The queries are sent as Grafana would send them (:mod:`tests.monitor.grafana`):
template variables filled from Prometheus's label values, interval macros
computed for the dashboard's default range. A query that can legitimately be
empty while the fleet is healthy is listed in :data:`EMPTY_WHEN_HEALTHY`
with the fault that makes it answer; that fault is injected and the query
must then return a series.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.deploy.promql import metric_names
from tests.monitor.grafana import Target, fill_variables, panel_targets
from tests.monitor.stack import SCRAPE_INTERVAL_S, MonitoredFleet

pytestmark = pytest.mark.kafka

#: How long a query may take to answer once its data exists (two samples for a rate).
ANSWER_TIMEOUT_S = 20.0
#: Freezing the broker longer than the sink's commit timeout (5 s) makes commits fail.
BROKER_FREEZE_S = 7.0


@dataclass(frozen=True)
class Fault:
    """Why a metric's series can be absent on a healthy fleet, and what makes it appear."""

    why: str
    inject: Callable[[MonitoredFleet], None]


def _malformed_frames(m: MonitoredFleet) -> None:
    m.sim_admin("POST", "/sim/faults/frames", kind="malformed", count=5)


def _expire_channels(m: MonitoredFleet) -> None:
    m.sim_admin("POST", "/sim/faults/expire")


def _freeze_broker(m: MonitoredFleet) -> None:
    m.freeze_broker(True)
    try:
        time.sleep(BROKER_FREEZE_S)
    finally:
        m.freeze_broker(False)


#: Metric → why it can be empty and the fault that fills it. Every other query must answer at once.
EMPTY_WHEN_HEALTHY: dict[str, Fault] = {
    "bridge_produce_errors_total": Fault("no Kafka error has happened yet", _freeze_broker),
    "bridge_dlq_records_total": Fault("no frame was malformed yet", _malformed_frames),
    "bridge_channel_rotations_total": Fault("no channel has been replaced yet", _expire_channels),
}


def _targets(m: MonitoredFleet) -> list[Target]:
    values = fill_variables(m.chart.dashboard, m.prometheus.label_values)
    return panel_targets(m.chart.dashboard, values, SCRAPE_INTERVAL_S)


def _fault_of(target: Target) -> Fault | None:
    faults = [EMPTY_WHEN_HEALTHY[name] for name in metric_names(target.expr) if name in EMPTY_WHEN_HEALTHY]
    return faults[0] if faults else None


def _wait_answers(
    m: MonitoredFleet, targets: list[Target], timeout_s: float = ANSWER_TIMEOUT_S
) -> list[Target]:
    """The targets still empty after ``timeout_s``."""
    pending = list(targets)
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        pending = [t for t in pending if not m.prometheus.query(t.expr)]
        if pending:
            time.sleep(SCRAPE_INTERVAL_S / 2)
    return pending


def test_every_variable_has_values(monitored: MonitoredFleet) -> None:
    """Each template variable resolves from Prometheus to a value matching the fleet's series."""
    values = fill_variables(monitored.chart.dashboard, monitored.prometheus.label_values)
    queried = {v["name"] for v in monitored.chart.dashboard["templating"]["list"] if v["type"] == "query"}
    assert queried <= set(values)
    assert all(values[name] for name in queried), values


def test_every_panel_answers_while_the_fleet_streams(monitored: MonitoredFleet) -> None:
    """Every query not listed as empty-when-healthy returns at least one series."""
    monitored.settle()
    targets = [t for t in _targets(monitored) if _fault_of(t) is None]
    assert len(targets) > 20
    empty = _wait_answers(monitored, targets)
    assert empty == [], "\n".join(f"{t.panel} [{t.ref_id}]: {t.expr}" for t in empty)


def test_empty_when_healthy_panels_answer_under_their_fault(monitored: MonitoredFleet) -> None:
    """Each listed fault is injected, and then every query that depends on it returns a series."""
    targets = [t for t in _targets(monitored) if _fault_of(t) is not None]
    used = {name for t in targets for name in metric_names(t.expr) if name in EMPTY_WHEN_HEALTHY}
    assert used == set(EMPTY_WHEN_HEALTHY), "a listed metric no panel queries"
    for name, fault in EMPTY_WHEN_HEALTHY.items():
        fault.inject(monitored)
        depending = [t for t in targets if name in metric_names(t.expr)]
        empty = _wait_answers(monitored, depending)
        assert empty == [], f"{name} ({fault.why}) still empty: " + "; ".join(t.expr for t in empty)
    monitored.settle()


_SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})")


def test_alert_selectors_match_the_scraped_labels(monitored: MonitoredFleet) -> None:
    """Every labelled selector of every rule finds series: the rules select the labels the chart scrapes."""
    monitored.settle()
    checked = []
    for group in monitored.chart.rules["groups"]:
        for rule in group["rules"]:
            for name, matchers in _SELECTOR.findall(str(rule["expr"])):
                if name in EMPTY_WHEN_HEALTHY:
                    continue
                checked.append(f"{name}{matchers}")
                assert monitored.prometheus.query(f"{name}{matchers}"), (
                    f"{rule['alert']}: {name}{matchers} is empty"
                )
    assert checked, "no rule has a labelled selector"
