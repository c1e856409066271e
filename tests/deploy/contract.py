"""The DESIGN §5 metric contract as the series names Prometheus stores.

Counters are exported with ``_total``, histograms as ``_bucket``/``_sum``/
``_count``; the dashboard and the alerts may use only these, plus ``up``
(Prometheus's own scrape-health series) in alert rules.
"""

from __future__ import annotations

__all__ = ["DESIGN_COUNTERS", "DESIGN_GAUGES", "DESIGN_HISTOGRAMS", "DESIGN_SERIES"]

DESIGN_COUNTERS = (
    "bridge_genesys_events_total",
    "bridge_records_produced_total",
    "bridge_produce_errors_total",
    "bridge_dlq_records_total",
    "bridge_channel_connects_total",
    "bridge_channel_rotations_total",
    "bridge_reconcile_runs_total",
    "bridge_reconcile_corrections_total",
    "bridge_genesys_http_requests_total",
    "bridge_genesys_rate_limited_total",
    "bridge_fenced_total",
)
DESIGN_HISTOGRAMS = ("bridge_event_delivery_seconds", "bridge_event_lag_seconds")
DESIGN_GAUGES = (
    "bridge_channel_heartbeat_age_seconds",
    "bridge_channel_expiry_seconds",
    "bridge_subscribed_topics",
    "bridge_shards_owned",
    "bridge_shard_users",
    "bridge_roster_users",
    "bridge_roster_unassigned_users",
    "bridge_build_info",
)
DESIGN_SERIES = frozenset(
    DESIGN_COUNTERS
    + DESIGN_GAUGES
    + tuple(f"{h}{suffix}" for h in DESIGN_HISTOGRAMS for suffix in ("_bucket", "_sum", "_count"))
)
