"""The deploy artefacts against the worker's own code (README "Metrics" and "Configuration").

The chart's environment variables must be settings the worker reads, and
every series the dashboard and the alerts query must be one the worker's
metrics registry exports. (Scraping a running worker is the worker's
integration test; this checks the declared registry.)
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from prometheus_client.metrics_core import Metric

from bridge import metrics
from bridge.settings import Settings
from tests.deploy.contract import CONTRACT_SERIES
from tests.deploy.promql import metric_names
from tests.deploy.test_alerts import ALERTS, PROMETHEUS_SERIES
from tests.deploy.test_chart import SCENARIOS, configmap, render, worker
from tests.deploy.test_dashboard import DASHBOARD, expressions

#: The environment names the chart relies on.
CHART_SETTINGS = {
    "BRIDGE_GENESYS_REGION",
    "BRIDGE_GENESYS_CLIENT_ID",
    "BRIDGE_GENESYS_CLIENT_SECRET",
    "BRIDGE_GENESYS_EXTRA_CLIENTS",
    "BRIDGE_GENESYS_API_URL",
    "BRIDGE_GENESYS_LOGIN_URL",
    "BRIDGE_KAFKA_BOOTSTRAP_SERVERS",
    "BRIDGE_KAFKA_SECURITY_PROTOCOL",
    "BRIDGE_KAFKA_SASL_MECHANISM",
    "BRIDGE_KAFKA_SASL_USERNAME",
    "BRIDGE_KAFKA_SASL_PASSWORD",
    "BRIDGE_KAFKA_SSL_CA_LOCATION",
    "BRIDGE_ID",
    "BRIDGE_SHARD_CAPACITY",
    "BRIDGE_METRICS_PORT",
    "BRIDGE_LOG_LEVEL",
    "BRIDGE_LOG_FORMAT",
    "BRIDGE_ROSTER_REFRESH_S",
    "BRIDGE_TOPIC_CREATE",
    "BRIDGE_TOPIC_REPLICATION_FACTOR",
    "BRIDGE_TOPIC_MIN_INSYNC_REPLICAS",
    "BRIDGE_KAFKA_CONFIG",
    "BRIDGE_KAFKA_SSL_CERTIFICATE_LOCATION",
    "BRIDGE_KAFKA_SSL_KEY_LOCATION",
}


def settings_env_names() -> set[str]:
    """The environment variable of every Settings field (prefix + name, or its alias)."""
    prefix = Settings.model_config.get("env_prefix", "")
    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        alias: Any = field.validation_alias or field.alias
        if alias is None:
            names.add(f"{prefix}{name}".upper())
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names |= {str(choice).upper() for choice in alias.choices if isinstance(choice, str)}
    return names


def chart_env_names() -> set[str]:
    """Every BRIDGE_* variable any ci scenario sets, through the ConfigMap or env."""
    names: set[str] = set()
    for scenario in SCENARIOS:
        docs = render(scenario)
        names |= set(configmap(docs))
        names |= {e["name"] for e in worker(docs)["env"]}
    return {n for n in names if n.startswith("BRIDGE_")}


def exported_series() -> set[str]:
    """Series names the registry exposes, by metric type."""
    series: set[str] = set()
    families: list[Metric] = list(metrics.REGISTRY.collect())
    for family in families:
        if family.type == "counter":
            series.add(f"{family.name}_total")
        elif family.type == "histogram":
            series |= {f"{family.name}{s}" for s in ("_bucket", "_sum", "_count")}
        elif family.type == "info":
            series.add(f"{family.name}_info")
        else:
            series.add(family.name)
    return series


def test_chart_sets_only_settings_the_worker_reads() -> None:
    """Each BRIDGE_* variable of the chart is a field of bridge.settings.Settings."""
    known = settings_env_names()
    assert chart_env_names() <= known, chart_env_names() - known
    assert known >= CHART_SETTINGS, CHART_SETTINGS - known


def test_chart_covers_the_design_settings() -> None:
    """The chart can set every contract name (across its scenarios)."""
    assert chart_env_names() >= CHART_SETTINGS, CHART_SETTINGS - chart_env_names()


def test_image_and_chart_default_port_is_the_workers() -> None:
    """9464 is the worker's default metrics port, the image's and the chart's."""
    assert Settings.model_fields["metrics_port"].default == 9464
    values = yaml.safe_load((DASHBOARD.parents[2] / "helm" / "presence-bridge" / "values.yaml").read_text())
    assert values["metrics"]["port"] == 9464


def test_metric_names_match_the_registry() -> None:
    """METRIC_NAMES lists exactly what the registry exports under bridge_."""
    exported = {s for s in exported_series() if s.startswith("bridge_")}
    base = {s.removesuffix("_bucket") for s in exported if not s.endswith(("_sum", "_count"))}
    assert set(metrics.METRIC_NAMES) == base


def test_worker_exports_the_design_contract() -> None:
    """Every contract series is exported by the worker."""
    assert exported_series() >= CONTRACT_SERIES, CONTRACT_SERIES - exported_series()


def test_dashboard_uses_only_exported_metrics() -> None:
    """No dashboard panel queries a series the worker does not export."""
    exported = exported_series()
    dashboard = json.loads(DASHBOARD.read_text())
    for expr in expressions(dashboard):
        assert metric_names(expr) <= exported, f"{expr}: {metric_names(expr) - exported}"


def test_alerts_use_only_exported_metrics() -> None:
    """No alert queries a series the worker does not export (besides Prometheus's `up`)."""
    exported = exported_series() | PROMETHEUS_SERIES
    doc = yaml.safe_load(ALERTS.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            names = metric_names(rule["expr"])
            assert names <= exported, f"{rule['alert']}: {names - exported}"


def test_termination_grace_outlasts_the_drain() -> None:
    """The chart's grace period is longer than the worker's drain timeout."""
    values = yaml.safe_load((DASHBOARD.parents[2] / "helm" / "presence-bridge" / "values.yaml").read_text())
    drain = Settings.model_fields["drain_timeout_s"].default
    assert values["terminationGracePeriodSeconds"] >= drain + 10


def test_alert_thresholds_sit_beyond_the_workers_own_recovery() -> None:
    """Alerts wait longer than the watchdog and the reconnect backoff would take to heal."""
    fields = Settings.model_fields
    watchdog = fields["heartbeat_interval_s"].default * fields["heartbeat_timeout_factor"].default
    doc = yaml.safe_load(ALERTS.read_text())
    by_name = {r["alert"]: r for g in doc["groups"] for r in g["rules"]}
    stale = by_name["BridgeHeartbeatStale"]["expr"]
    match = re.search(r"bridge_channel_heartbeat_age_seconds(?:\{[^}]*\})? > ([0-9.]+)", stale)
    assert match, stale
    threshold = float(match.group(1))
    assert threshold > watchdog
    disconnected_for = int(by_name["BridgeShardDisconnected"]["for"].removesuffix("m")) * 60
    assert disconnected_for >= 2 * fields["backoff_max_s"].default
