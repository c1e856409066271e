"""The metric contract (README "Metrics") as the series names Prometheus stores.

Counters are exported with ``_total``, histograms as ``_bucket``/``_sum``/
``_count``; the dashboard and the alerts may use only these, plus ``up``
(Prometheus's own scrape-health series) in alert rules.
"""

from __future__ import annotations

__all__ = ["CONTRACT_COUNTERS", "CONTRACT_GAUGES", "CONTRACT_HISTOGRAMS", "CONTRACT_SERIES"]

CONTRACT_COUNTERS = (
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
CONTRACT_HISTOGRAMS = ("bridge_event_delivery_seconds", "bridge_event_lag_seconds")
CONTRACT_GAUGES = (
    "bridge_channel_heartbeat_age_seconds",
    "bridge_channel_expiry_seconds",
    "bridge_subscribed_topics",
    "bridge_shards_owned",
    "bridge_shard_users",
    "bridge_roster_users",
    "bridge_roster_unassigned_users",
    "bridge_build_info",
)
CONTRACT_SERIES = frozenset(
    CONTRACT_COUNTERS
    + CONTRACT_GAUGES
    + tuple(f"{h}{suffix}" for h in CONTRACT_HISTOGRAMS for suffix in ("_bucket", "_sum", "_count"))
)
