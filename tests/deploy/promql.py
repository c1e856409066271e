"""Metric names referenced by a PromQL expression, without a PromQL parser.

Label matchers, range and subquery brackets, strings, numbers, grouping
clauses and function calls are removed; what is left are metric names (and
keywords, which are dropped). Grafana variables such as ``$__rate_interval``
only occur inside the removed parts.
"""

from __future__ import annotations

import re

__all__ = ["metric_names"]

KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"}
    | {"sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "group"}
)
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_BRACES = re.compile(r"\{[^}]*\}")
_BRACKETS = re.compile(r"\[[^\]]*\]")
_FUNCTION = re.compile(r"\b[a-zA-Z_][a-zA-Z0-9_]*\s*\(")
_NUMBER = re.compile(r"\b\d+(\.\d+)?(e[+-]?\d+)?\b")
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """Every metric name *expr* selects."""
    text = _STRINGS.sub(" ", expr)
    text = _BRACES.sub(" ", text)
    text = _BRACKETS.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _FUNCTION.sub("(", text)
    text = _NUMBER.sub(" ", text)
    return {name for name in _IDENT.findall(text) if name.lower() not in KEYWORDS}
