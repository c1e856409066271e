"""What Grafana sends to Prometheus for a dashboard: template variables and interval macros filled in.

- Query variables ``label_values(<selector>, <label>)`` and ``label_values(<label>)``
  are answered from Prometheus's label-values API (``match[]`` = the selector,
  after the variables before it are filled, as Grafana refreshes them in order).
  The value is the variable's current selection when it is "All" (``$__all``):
  the ``allValue`` when set, otherwise every value; else the first value in the
  variable's ``sort`` order.
- Values are formatted as Grafana formats them for Prometheus: a single value
  verbatim, several as a regex alternation ``(a|b)`` with regex metacharacters
  escaped.
- ``$__interval`` is the dashboard's time range divided by the panel's
  ``maxDataPoints`` (:data:`DEFAULT_MAX_DATA_POINTS` when unset, about the
  width in pixels of a wide panel), rounded the way Grafana rounds it, never
  below the data source's scrape interval (the panel's ``interval`` when set).
  ``$__rate_interval`` is ``max($__interval + scrape interval, 4 x scrape
  interval)``; ``$__range`` is the time range.
- Datasource variables only pick the data source (the one Prometheus here).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from tests.monitor.rules import parse_duration

__all__ = [
    "DEFAULT_MAX_DATA_POINTS",
    "Target",
    "dashboard_range_s",
    "fill_variables",
    "format_seconds",
    "interpolate",
    "panel_targets",
    "round_interval",
]

#: maxDataPoints when a panel sets none: Grafana uses the panel's width in pixels.
DEFAULT_MAX_DATA_POINTS = 1000
#: Grafana's interval rounding: below the bound (ms) → this interval (ms).
_ROUNDING = (
    (15, 10),
    (35, 20),
    (75, 50),
    (150, 100),
    (350, 200),
    (750, 500),
    (1500, 1000),
    (3500, 2000),
    (7500, 5000),
    (12500, 10000),
    (17500, 15000),
    (25000, 20000),
    (45000, 30000),
    (90000, 60000),
    (210000, 120000),
    (450000, 300000),
    (1050000, 600000),
    (2100000, 1200000),
    (5400000, 1800000),
    (9000000, 3600000),
    (16200000, 7200000),
    (32400000, 10800000),
    (86400000, 21600000),
)
_NOW_MINUS = re.compile(r"^now-(\d+)([smhdwy])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_LABEL_VALUES = re.compile(
    r"^\s*label_values\(\s*(?:(?P<selector>.+)\s*,\s*)?(?P<label>[a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$"
)
_VARIABLE = re.compile(
    r"\$\{(?P<braced>[a-zA-Z_][a-zA-Z0-9_]*)(?::[a-z]+)?\}|\$(?P<plain>[a-zA-Z_][a-zA-Z0-9_]*)"
)
_REGEX_META = re.compile(r"([\\^$.|?*+()\[\]{}])")

#: Answers label values: (label, match selector or None) → values.
LabelValues = Callable[[str, str | None], list[str]]


@dataclass(frozen=True)
class Target:
    """One query of one panel."""

    panel: str
    ref_id: str
    expr: str
    legend: str


def round_interval(ms: float) -> float:
    """Grafana's rounding of a computed interval (milliseconds)."""
    for bound, value in _ROUNDING:
        if ms < bound:
            return value
    return 86400000


def format_seconds(seconds: float) -> str:
    """A duration for PromQL: whole seconds as ``Ns``, otherwise milliseconds."""
    ms = round(seconds * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def dashboard_range_s(dashboard: dict[str, Any]) -> float:
    """The dashboard's default time range (``now-6h`` to ``now``) in seconds."""
    time = dashboard.get("time", {"from": "now-6h", "to": "now"})
    match = _NOW_MINUS.match(time["from"])
    if match is None or time.get("to", "now") != "now":
        raise ValueError(f"unsupported dashboard time range {time}")
    return int(match.group(1)) * _UNIT_S[match.group(2)]


def _format(values: list[str]) -> str:
    if len(values) == 1:
        return values[0]
    return "(" + "|".join(_REGEX_META.sub(r"\\\1", v) for v in values) + ")"


def interpolate(text: str, values: dict[str, str]) -> str:
    """``text`` with ``$name`` and ``${name}`` replaced; an unknown variable is an error."""

    def one(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("plain")
        if name not in values:
            raise KeyError(f"dashboard variable ${name} is not defined")
        return values[name]

    return _VARIABLE.sub(one, text)


def _is_all(variable: dict[str, Any]) -> bool:
    current = variable.get("current", {}).get("value")
    if current is None:
        return bool(variable.get("includeAll", False))
    return current in ("$__all", ["$__all"])


def fill_variables(dashboard: dict[str, Any], label_values: LabelValues) -> dict[str, str]:
    """The value Grafana substitutes for each template variable, in dashboard order."""
    values: dict[str, str] = {}
    for variable in dashboard.get("templating", {}).get("list", []):
        name = variable["name"]
        kind = variable.get("type")
        if kind == "datasource":
            values[name] = str(variable.get("query", "prometheus"))
            continue
        if kind in {"constant", "custom", "textbox"}:
            options = [o.strip() for o in str(variable.get("query", "")).split(",") if o.strip()]
            values[name] = _format(options[:1] if not _is_all(variable) else options)
            continue
        if kind != "query":
            raise ValueError(f"variable {name}: type {kind!r} is not supported")
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query)
        match = _LABEL_VALUES.match(text)
        if match is None:
            raise ValueError(f"variable {name}: only label_values() queries are supported, got {text!r}")
        selector = match.group("selector")
        found = label_values(match.group("label"), interpolate(selector, values) if selector else None)
        if variable.get("regex"):
            found = [v for v in found if re.search(variable["regex"], v)]
        found = sorted(found, reverse=variable.get("sort") in (2, 4, 6))
        if not found:
            raise AssertionError(f"variable {name}: {text!r} returned no values")
        if _is_all(variable) and variable.get("includeAll", False):
            values[name] = variable["allValue"] if variable.get("allValue") else _format(found)
        else:
            values[name] = found[0]
    return values


def _panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from _panels(panel.get("panels", []))


def panel_targets(
    dashboard: dict[str, Any], values: dict[str, str], scrape_interval_s: float, range_s: float | None = None
) -> list[Target]:
    """Every panel query as Grafana sends it for a time range of ``range_s`` (default: the dashboard's)."""
    range_s = dashboard_range_s(dashboard) if range_s is None else range_s
    out: list[Target] = []
    for panel in _panels(dashboard["panels"]):
        min_s = scrape_interval_s
        if panel.get("interval"):
            min_s = max(min_s, parse_duration(interpolate(panel["interval"], values).lstrip(">")))
        points = panel.get("maxDataPoints") or DEFAULT_MAX_DATA_POINTS
        interval_s = max(min_s, round_interval(range_s * 1000 / points) / 1000)
        rate_s = max(interval_s + scrape_interval_s, 4 * scrape_interval_s)
        macros = {
            "__rate_interval": format_seconds(rate_s),
            "__interval": format_seconds(interval_s),
            "__range": format_seconds(range_s),
            "__interval_ms": str(round(interval_s * 1000)),
            "__range_s": str(round(range_s)),
        }
        for target in panel.get("targets", []):
            if target.get("hide") or not target.get("expr"):
                continue
            expr = interpolate(target["expr"], {**values, **macros})
            out.append(Target(panel["title"], target.get("refId", ""), expr, target.get("legendFormat", "")))
    return out
