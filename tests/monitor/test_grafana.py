"""Grafana's variable and interval handling as the live panel tests reproduce it."""

from __future__ import annotations

import pytest

from tests.monitor.grafana import fill_variables, interpolate, panel_targets, round_interval


def _dashboard() -> dict[str, object]:
    return {
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus"},
                {
                    "name": "ns",
                    "type": "query",
                    "query": {"query": "label_values(up, namespace)"},
                    "includeAll": True,
                    "allValue": ".*",
                    "current": {"value": ["$__all"]},
                },
                {
                    "name": "job",
                    "type": "query",
                    "query": 'label_values(up{namespace=~"$ns"}, job)',
                    "sort": 1,
                },
            ]
        },
        "panels": [
            {"title": "rate", "targets": [{"refId": "A", "expr": 'rate(x{job="$job"}[$__rate_interval])'}]},
            {
                "title": "row",
                "type": "row",
                "panels": [{"title": "inner", "targets": [{"expr": "y[$__range]"}]}],
            },
        ],
    }


def test_round_interval_follows_grafana() -> None:
    """21.6 s rounds to 20 s, 3.6 s to 5 s, 800 ms to 1 s."""
    assert (round_interval(21600), round_interval(3600), round_interval(800)) == (20000, 5000, 1000)


def test_variables_fill_in_order_with_all_and_first() -> None:
    """ "All" takes the allValue; a later variable's query sees the earlier values; else the first value."""
    seen: list[tuple[str, str | None]] = []

    def values(label: str, match: str | None) -> list[str]:
        seen.append((label, match))
        return {"namespace": ["b", "a"], "job": ["z", "presence-bridge"]}[label]

    filled = fill_variables(_dashboard(), values)
    assert filled == {"datasource": "prometheus", "ns": ".*", "job": "presence-bridge"}
    assert seen[1] == ("job", 'up{namespace=~".*"}')


def test_macros_are_those_grafana_computes() -> None:
    """6 h over 1,000 points is a 20 s interval, so $__rate_interval is 21 s at a 1 s scrape."""
    targets = panel_targets(_dashboard(), {"job": "j"}, 1.0)
    assert [t.expr for t in targets] == ['rate(x{job="j"}[21s])', "y[21600s]"]


def test_unknown_variable_is_an_error() -> None:
    """A query naming a variable the dashboard does not define fails instead of reaching Prometheus."""
    with pytest.raises(KeyError):
        interpolate('up{x=~"$nope"}', {})
