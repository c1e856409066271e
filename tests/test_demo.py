"""`presence-bridge demo` in its finite mode: simulator + workers + real Kafka, audited at the end."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from bridge.demo import Snapshot, WorkerStats, bucket_quantile, parse_metrics, render_line
from tests.conftest import KafkaBroker

#: Workers the test runs: the fleet splits the shards between them.
DEMO_WORKERS = 2
DEMO_TIMEOUT_S = 240

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


@pytest.mark.kafka
@pytest.mark.slow
def test_demo_finite_run_passes_its_audit(kafka: KafkaBroker, tmp_path: object) -> None:
    tag = uuid.uuid4().hex[:8]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env.update(
        {
            "BRIDGE_TOPIC_PRESENCE": f"demo-presence-{tag}",
            "BRIDGE_TOPIC_ROUTING_STATUS": f"demo-routing-{tag}",
            "BRIDGE_TOPIC_AGENT_STATE": f"demo-state-{tag}",
            "BRIDGE_TOPIC_DLQ": f"demo-dlq-{tag}",
            "BRIDGE_TOPIC_PARTITIONS": "3",
        }
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bridge",
            "demo",
            "--agents",
            "200",
            "--workers",
            str(DEMO_WORKERS),
            "--seconds",
            "20",
            "--bootstrap",
            kafka.bootstrap,
            "--dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=DEMO_TIMEOUT_S,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "injected socket drop" in out and "injected maintenance" in out
    assert "  audit: 200 agents, 0 mismatches" in out
    verdict = "demo: PASS — Kafka agrees with Genesys (200 agents, 0 mismatches)"
    assert out.rstrip().splitlines()[-1] == verdict
