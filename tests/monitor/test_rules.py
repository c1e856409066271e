"""The rule scaling used by the live alert tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import CHART, PROMTOOL, require_tool
from tests.monitor.rules import format_duration, parse_duration, scale_expr, scale_rules

RULES = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())


def test_durations_parse_and_format() -> None:
    """Compound durations parse to seconds; fractions format as milliseconds; zero stays zero."""
    assert parse_duration("1h30m") == 5400
    assert format_duration(4) == "4s"
    assert format_duration(1.5) == "1500ms"
    assert format_duration(0) == "0s"
    with pytest.raises(ValueError):
        parse_duration("5 minutes")


def test_windows_and_age_thresholds_scale_but_latency_thresholds_do_not() -> None:
    """Range windows and *_age_seconds thresholds shrink; quantile thresholds and counts stay."""
    assert scale_expr("rate(x_total[5m]) > 0", 30) == "rate(x_total[10s]) > 0"
    assert scale_expr("max_over_time(x[1h:1m])", 60) == "max_over_time(x[60s:1s])"
    assert scale_expr("a_age_seconds > 90 unless b == 0", 30) == "a_age_seconds > 3 unless b == 0"
    assert scale_expr("histogram_quantile(0.99, rate(h_bucket[5m])) > 2", 30).endswith("[10s])) > 2")
    assert scale_expr("increase(f_total[1h]) > 3", 30) == "increase(f_total[120s]) > 3"


def test_every_chart_rule_is_scaled(tmp_path: Path) -> None:
    """Every for: and window of the chart's rules is divided, and promtool accepts the result."""
    scaled = scale_rules(RULES, 30)
    pairs = zip(RULES["groups"][0]["rules"], scaled["groups"][0]["rules"], strict=True)
    for original, fast in pairs:
        assert parse_duration(fast["for"]) * 30 == parse_duration(original["for"])
        assert "m]" not in fast["expr"] and "h]" not in fast["expr"], fast["expr"]
        assert fast["labels"] == original["labels"]
    out = tmp_path / "rules.yaml"
    out.write_text(yaml.safe_dump(scaled))
    promtool = require_tool(PROMTOOL, "it runs `apt-get install -y prometheus`")
    subprocess.run([str(promtool), "check", "rules", str(out)], check=True, capture_output=True)
