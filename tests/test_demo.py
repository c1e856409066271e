"""`presence-bridge demo` in its finite mode: simulator + workers + real Kafka, audited at the end."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from tests.conftest import KafkaBroker

#: Workers the test runs: the fleet splits the shards between them.
DEMO_WORKERS = 2
DEMO_TIMEOUT_S = 240


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
