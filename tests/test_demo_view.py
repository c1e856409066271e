"""bridge.demo_view: the workers' metrics parsed, the status line drawn."""

from __future__ import annotations

from bridge.demo_view import Snapshot, WorkerStats, bucket_quantile, parse_metrics, render_line

METRICS = """\
# TYPE bridge_shards_owned gauge
bridge_shards_owned 2.0
# TYPE bridge_shard_users gauge
bridge_shard_users{shard="0"} 50.0
bridge_shard_users{shard="3"} 50.0
# TYPE bridge_records_produced_total counter
bridge_records_produced_total{topic="a"} 10.0
bridge_records_produced_total{topic="b"} 5.0
# TYPE bridge_channel_connects_total counter
bridge_channel_connects_total{reason="start"} 2.0
bridge_channel_connects_total{reason="reconnect"} 1.0
bridge_channel_connects_total{reason="maintenance"} 1.0
# TYPE bridge_event_delivery_seconds histogram
bridge_event_delivery_seconds_bucket{le="0.01"} 90.0
bridge_event_delivery_seconds_bucket{le="0.05"} 99.0
bridge_event_delivery_seconds_bucket{le="0.1"} 100.0
bridge_event_delivery_seconds_bucket{le="+Inf"} 100.0
bridge_event_delivery_seconds_count 100.0
bridge_event_delivery_seconds_sum 1.0
"""


def test_metrics_parsing_and_status_line() -> None:
    stats = parse_metrics(METRICS)
    assert stats.shards == 2 and stats.shard_ids == ("0", "3")
    assert stats.records == 15 and stats.reconnects == 2
    assert bucket_quantile(stats.delivery_buckets, 0.99) == 0.05
    snap = Snapshot(elapsed=65, phase="streaming", workers=[stats, WorkerStats()])
    line = render_line(snap)
    assert line.startswith("demo 01:05 streaming:")
    assert "shards w1=2 w2=down" in line and "delivery p99 ≤ 50 ms" in line
