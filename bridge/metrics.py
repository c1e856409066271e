"""Prometheus metrics (README "Metrics"): names are a contract with the dashboard and alerts.

All metrics live in one module-level registry, :data:`REGISTRY`, so the
process exports exactly these (plus the standard process collectors) and
tests can read them. :data:`METRIC_NAMES` lists every base name; the chart's
tests check the dashboard and alert rules against it.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

from bridge import __version__

__all__ = [
    "BACKFILL_FALLBACKS",
    "BACKFILL_QUERIES",
    "BACKFILL_RECORDS",
    "BUILD_INFO",
    "CHANNEL_CONNECTS",
    "CHANNEL_EXPIRY",
    "CHANNEL_ROTATIONS",
    "DLQ_RECORDS",
    "EVENT_DELIVERY",
    "EVENT_LAG",
    "FENCED",
    "FOREIGN_MAP_RECORDS",
    "GAP_BUCKETS",
    "GAP_SECONDS",
    "GENESYS_EVENTS",
    "GENESYS_HTTP_REQUESTS",
    "GENESYS_RATE_LIMITED",
    "GENESYS_RATE_LIMIT_REMAINING",
    "HEARTBEAT_AGE",
    "METRIC_NAMES",
    "ORPHANS_TOMBSTONED",
    "PRODUCE_ERRORS",
    "RECONCILE_CORRECTIONS",
    "RECONCILE_RUNS",
    "RECORDS_PRODUCED",
    "REGISTRY",
    "ROSTER_REJECTED",
    "ROSTER_UNASSIGNED",
    "ROSTER_USERS",
    "SHARDS_OWNED",
    "SHARD_USERS",
    "STALE_EVENTS",
    "STALE_WRITTEN_LATE",
    "SUBSCRIBED_TOPICS",
    "SUBSCRIPTION_REJECTED_TOPICS",
    "SWEEP_CORRECTIONS",
    "BatchHistogram",
]

# The *_created series double the exposition size and no panel or alert uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)

#: Delivery is sub-second when healthy; the tail buckets catch Kafka outages.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Genesys→Kafka lag includes Genesys's own delay and gap recovery: wider.
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)

GENESYS_EVENTS = Counter(
    "bridge_genesys_events",
    "Frames received from Genesys, by kind (presence, routing_status, heartbeat, pong, system, unknown).",
    ["kind"],
    registry=REGISTRY,
)
RECORDS_PRODUCED = Counter(
    "bridge_records_produced", "Records committed to Kafka, by topic.", ["topic"], registry=REGISTRY
)
PRODUCE_ERRORS = Counter(
    "bridge_produce_errors", "Kafka produce or commit failures, by reason.", ["reason"], registry=REGISTRY
)
DLQ_RECORDS = Counter(
    "bridge_dlq_records", "Frames sent to the dead-letter topic, by reason.", ["reason"], registry=REGISTRY
)
STALE_EVENTS = Counter(
    "bridge_stale_events",
    "Stream frames dropped because a newer or identical change was already recorded, by kind.",
    ["kind"],
    registry=REGISTRY,
)


class BatchHistogram:
    """A Prometheus histogram that takes a whole batch of observations at once.

    The sink observes two latencies for every committed change. With
    prometheus_client's ``Histogram`` that is two locked updates per change on
    the GIL the socket reader needs; here a commit of N changes costs N
    ``bisect`` calls and one locked merge. The exposition is the same
    (``_bucket{le}`` cumulative, ``_count``, ``_sum``).
    """

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._bounds = tuple(float(b) for b in buckets)
        if list(self._bounds) != sorted(set(self._bounds)):
            raise ValueError("buckets must be strictly increasing")
        self._counts = [0] * (len(self._bounds) + 1)  # the last one is +Inf
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe(self, value: float) -> None:
        self.observe_many((value,))

    def observe_many(self, values: Iterable[float]) -> None:
        """Add every value (seconds) to its bucket; one lock for the whole batch."""
        bounds = self._bounds
        where = bisect.bisect_left
        local = [0] * len(self._counts)
        total = 0.0
        for value in values:
            local[where(bounds, value)] += 1  # the first bound >= value: Prometheus's "le"
            total += value
        with self._lock:
            counts = self._counts
            for i, n in enumerate(local):
                if n:
                    counts[i] += n
            self._sum += total

    def count(self) -> int:
        """Observations so far."""
        with self._lock:
            return sum(self._counts)

    def sum(self) -> float:
        """Sum of the observations so far."""
        with self._lock:
            return self._sum

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            counts = list(self._counts)
            total = self._sum
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, n in zip((*self._bounds, float("inf")), counts, strict=True):
            cumulative += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        family = HistogramMetricFamily(self._name, self._documentation, buckets=buckets, sum_value=total)
        yield family


EVENT_DELIVERY = BatchHistogram(
    "bridge_event_delivery_seconds",
    "Frame received to Kafka transaction committed.",
    LATENCY_BUCKETS,
    REGISTRY,
)
EVENT_LAG = BatchHistogram(
    "bridge_event_lag_seconds",
    "Genesys changedAt to Kafka transaction committed.",
    LAG_BUCKETS,
    REGISTRY,
)
CHANNEL_CONNECTS = Counter(
    "bridge_channel_connects",
    "Notification sockets opened, by reason (start, reconnect, maintenance, new_channel).",
    ["reason"],
    registry=REGISTRY,
)
CHANNEL_ROTATIONS = Counter(
    "bridge_channel_rotations",
    "Channels replaced by a new channel, by reason (expiring, not_found, no_longer_subscribed, "
    "subscription_changed, token_revoked).",
    ["reason"],
    registry=REGISTRY,
)
HEARTBEAT_AGE = Gauge(
    "bridge_channel_heartbeat_age_seconds",
    "Seconds since the shard's socket last received any frame.",
    ["shard"],
    registry=REGISTRY,
)
CHANNEL_EXPIRY = Gauge(
    "bridge_channel_expiry_seconds",
    "Seconds until the shard's channel expires.",
    ["shard"],
    registry=REGISTRY,
)
SUBSCRIBED_TOPICS = Gauge(
    "bridge_subscribed_topics",
    "Topics subscribed on the shard's channel while connected (0 when disconnected).",
    ["shard"],
    registry=REGISTRY,
)
SHARDS_OWNED = Gauge("bridge_shards_owned", "Shards this worker runs.", registry=REGISTRY)
SHARD_USERS = Gauge("bridge_shard_users", "Agents assigned to the shard.", ["shard"], registry=REGISTRY)
RECONCILE_RUNS = Counter("bridge_reconcile_runs", "Reconciliations completed.", registry=REGISTRY)
RECONCILE_CORRECTIONS = Counter(
    "bridge_reconcile_corrections",
    "Changes found by reconciliation that the stream had missed.",
    registry=REGISTRY,
)
SWEEP_CORRECTIONS = Counter(
    "bridge_sweep_corrections",
    "Agents the background sweep corrected: the stream lost their change without a gap.",
    registry=REGISTRY,
)
GENESYS_HTTP_REQUESTS = Counter(
    "bridge_genesys_http_requests",
    "Genesys REST requests, by templated endpoint and status.",
    ["endpoint", "status"],
    registry=REGISTRY,
)
GENESYS_RATE_LIMITED = Counter("bridge_genesys_rate_limited", "429 answers from Genesys.", registry=REGISTRY)
ROSTER_USERS = Gauge("bridge_roster_users", "Active agents in the roster.", registry=REGISTRY)
ROSTER_UNASSIGNED = Gauge(
    "bridge_roster_unassigned_users",
    "Agents that fit no shard within the channel budget.",
    registry=REGISTRY,
)
GENESYS_RATE_LIMIT_REMAINING = Gauge(
    "bridge_genesys_rate_limit_remaining",
    "Requests left in the endpoint's current Genesys rate-limit window (inin-ratelimit-allowed - count).",
    ["endpoint"],
    registry=REGISTRY,
)
SUBSCRIPTION_REJECTED_TOPICS = Gauge(
    "bridge_subscription_rejected_topics",
    "Topics Genesys rejected on the shard's channel (agents it cannot observe), by rejection reason.",
    ["shard", "reason"],
    registry=REGISTRY,
)
FENCED = Counter("bridge_fenced", "Shards lost because a newer owner fenced this worker.", registry=REGISTRY)
FOREIGN_MAP_RECORDS = Counter(
    "bridge_foreign_map_records",
    "Control-topic records of another fleet (another BRIDGE_ID), never applied.",
    registry=REGISTRY,
)
ROSTER_REJECTED = Counter(
    "bridge_roster_rejected",
    "Roster listings refused as implausible (too short or inconsistent); the map was kept.",
    registry=REGISTRY,
)
ORPHANS_TOMBSTONED = Counter(
    "bridge_orphans_tombstoned",
    "Agents a shard found in the state topic, written by this fleet for it, but no longer mapped.",
    registry=REGISTRY,
)
#: Gaps last from a second (a socket swap) to minutes (an outage); the lookback caps them at an hour.
GAP_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
GAP_SECONDS = BatchHistogram(
    "bridge_gap_seconds",
    "Length of each gap of a shard's stream (to - from of its bridge.gaps.v1 record).",
    GAP_BUCKETS,
    REGISTRY,
)
BACKFILL_RECORDS = Counter(
    "bridge_backfill_records",
    "Transitions read from Genesys's history of a gap, by outcome (written, late, already_written).",
    ["outcome"],
    registry=REGISTRY,
)
BACKFILL_FALLBACKS = Counter(
    "bridge_backfill_fallbacks",
    "Gaps whose backfill gave up and left them to reconciliation, by reason "
    "(forbidden, unavailable, budget, too_old).",
    ["reason"],
    registry=REGISTRY,
)
BACKFILL_QUERIES = Counter(
    "bridge_backfill_queries",
    "Analytics history queries of a gap, by result (ok, delayed: not caught up yet and retried, error).",
    ["result"],
    registry=REGISTRY,
)
STALE_WRITTEN_LATE = Counter(
    "bridge_stale_written_late",
    "Stream changes Genesys delivered after a newer one of the same agent, written late (late: true).",
    registry=REGISTRY,
)
BUILD_INFO = Gauge("bridge_build_info", "Build information.", ["version"], registry=REGISTRY)
BUILD_INFO.labels(version=__version__).set(1)

#: Every base metric name as exported (counters carry the ``_total`` suffix).
METRIC_NAMES: tuple[str, ...] = (
    "bridge_genesys_events_total",
    "bridge_records_produced_total",
    "bridge_produce_errors_total",
    "bridge_dlq_records_total",
    "bridge_stale_events_total",
    "bridge_event_delivery_seconds",
    "bridge_event_lag_seconds",
    "bridge_channel_connects_total",
    "bridge_channel_rotations_total",
    "bridge_channel_heartbeat_age_seconds",
    "bridge_channel_expiry_seconds",
    "bridge_subscribed_topics",
    "bridge_shards_owned",
    "bridge_shard_users",
    "bridge_reconcile_runs_total",
    "bridge_reconcile_corrections_total",
    "bridge_sweep_corrections_total",
    "bridge_genesys_http_requests_total",
    "bridge_genesys_rate_limited_total",
    "bridge_roster_users",
    "bridge_roster_unassigned_users",
    "bridge_fenced_total",
    "bridge_foreign_map_records_total",
    "bridge_roster_rejected_total",
    "bridge_orphans_tombstoned_total",
    "bridge_build_info",
    "bridge_genesys_rate_limit_remaining",
    "bridge_subscription_rejected_topics",
    "bridge_gap_seconds",
    "bridge_backfill_records_total",
    "bridge_backfill_fallbacks_total",
    "bridge_backfill_queries_total",
    "bridge_stale_written_late_total",
)
