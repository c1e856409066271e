"""The chart's alert rules on a faster clock, for tests that provoke every alert for real.

Production ``for:`` durations and range windows are minutes; a test has
seconds. :func:`scale_rules` divides every time in a rule by one factor, so
the rules keep their shape (the same expressions, labels and thresholds) and
only the clock runs faster:

- ``for:`` durations;
- range selectors and subquery ranges (``[5m]`` → ``[10s]`` at 30x);
- a threshold compared with a metric whose name ends in ``_age_seconds``
  (``bridge_channel_heartbeat_age_seconds > 90``): an age is a clock
  reading, and its threshold is a multiple of the Genesys heartbeat interval,
  which the test simulator also runs faster.

Latency thresholds (``histogram_quantile(...) > 2``) and counts are not
times of the clock and stay as they are. The factor the tests use is
:data:`TIME_SCALE`: Genesys heartbeats every 30 s and the test simulator
every second, so the test fleet's whole clock (heartbeat, watchdog) runs 30x
faster than production's.
"""

from __future__ import annotations

import copy
import re
from typing import Any

__all__ = ["TIME_SCALE", "format_duration", "parse_duration", "scale_expr", "scale_rules"]

#: Production Genesys heartbeat (30 s) over the test simulator's (1 s). (60x was
#: tried: 5 s windows are shorter than the sink's 5 s commit timeout, so the
#: broker-outage error rate flickers to 0 and BridgeKafkaDeliveryFailing never fires.)
TIME_SCALE = 30
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 31536000.0}
_DURATION_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_DURATION = re.compile(r"^(?:\d+(?:ms|s|m|h|d|w|y))+$")
_RANGE = re.compile(r"\[((?:\d+(?:ms|s|m|h|d|w|y))+)(:(?:(?:\d+(?:ms|s|m|h|d|w|y))+)?)?\]")
_AGE_THRESHOLD = re.compile(
    r"(\b[a-zA-Z_:][a-zA-Z0-9_:]*_age_seconds\b(?:\{[^}]*\})?\s*(?:>=|>)\s*)(\d+(?:\.\d+)?)"
)


def parse_duration(text: str) -> float:
    """A Prometheus duration (``1h30m``, ``90s``) in seconds."""
    if not _DURATION.match(text):
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(int(n) * _UNITS[unit] for n, unit in _DURATION_PART.findall(text))


def format_duration(seconds: float) -> str:
    """Seconds as a Prometheus duration in whole milliseconds (``0s`` stays ``0s``, else at least ``1ms``)."""
    if seconds == 0:
        return "0s"
    ms = max(1, round(seconds * 1000))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def _scaled(text: str, factor: float) -> str:
    return format_duration(parse_duration(text) / factor)


def scale_expr(expr: str, factor: float) -> str:
    """``expr`` with its range windows and age thresholds divided by ``factor``."""

    def window(match: re.Match[str]) -> str:
        resolution = match.group(2)
        if resolution and len(resolution) > 1:
            resolution = ":" + _scaled(resolution[1:], factor)
        return f"[{_scaled(match.group(1), factor)}{resolution or ''}]"

    def age(match: re.Match[str]) -> str:
        return f"{match.group(1)}{float(match.group(2)) / factor:g}"

    return _AGE_THRESHOLD.sub(age, _RANGE.sub(window, expr))


def scale_rules(rule_file: dict[str, Any], factor: float) -> dict[str, Any]:
    """A copy of a rule file (``{"groups": [...]}``) on a clock ``factor`` times faster."""
    out = copy.deepcopy(rule_file)
    for group in out["groups"]:
        if "interval" in group:
            group["interval"] = _scaled(group["interval"], factor)
        for rule in group["rules"]:
            rule["expr"] = scale_expr(str(rule["expr"]), factor)
            if "for" in rule:
                rule["for"] = _scaled(str(rule["for"]), factor)
    return out
