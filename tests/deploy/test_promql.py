"""The PromQL metric-name extractor the dashboard and alert tests rely on."""

from __future__ import annotations

from tests.deploy.promql import metric_names


def test_finds_metrics_inside_functions_and_aggregations() -> None:
    """Metric names survive; functions, grouping labels, matchers and ranges do not."""
    expr = (
        'histogram_quantile(0.99, sum by (le, job) (rate(bridge_event_delivery_seconds_bucket{job=~"$job"}'
        "[$__rate_interval]))) > 2 unless on (shard) bridge_subscribed_topics == 0"
    )
    assert metric_names(expr) == {"bridge_event_delivery_seconds_bucket", "bridge_subscribed_topics"}


def test_reports_unknown_names() -> None:
    """A name outside the contract is reported, so the contract test can reject it."""
    assert metric_names("sum(rate(node_cpu_seconds_total[5m])) or vector(0)") == {"node_cpu_seconds_total"}


def test_ignores_strings_and_keywords() -> None:
    """Label values and binary keywords are not metric names."""
    assert metric_names('absent(up{job="presence-bridge"}) or max without (x) (up) == bool 0') == {"up"}
