"""`presence-bridge run` as a real process: graceful SIGTERM, and no secret in any output."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import KafkaBroker, localkafka
from tests.worker.conftest import SimProcess, bridge_settings, eventually_async, sim_process

pytestmark = pytest.mark.kafka

SECRET = "Very-Secret-Client-Value-42"
#: The simulator's tokens are secrets.token_urlsafe(32): 43 URL-safe characters.
TOKEN_SHAPE = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])")


def _env(kafka: KafkaBroker, sim: SimProcess, port: int, **extra: str) -> dict[str, str]:
    settings = bridge_settings(kafka, sim, shard_capacity=50)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    for name, value in settings.model_dump(exclude_unset=True).items():
        if value is None or name in {"genesys_extra_clients"}:
            continue
        plain = value.get_secret_value() if hasattr(value, "get_secret_value") else value
        env[f"BRIDGE_{name.upper()}"] = str(plain)
    env["BRIDGE_METRICS_PORT"] = str(port)
    env.update(extra)
    return env


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = log.open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "bridge", "run"], env=env, stdout=out, stderr=subprocess.STDOUT
    )


async def _ready(port: int) -> bool:
    try:
        async with httpx.AsyncClient() as client:
            return (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
    except httpx.HTTPError:
        return False


async def test_sigterm_drains_and_exits_zero_within_10_s(kafka: KafkaBroker, tmp_path: Path) -> None:
    """SIGTERM while streaming: the process commits, closes its sockets and exits 0 within 10 s."""
    async with sim_process(agents=200, events_per_sec=100, seed=5, heartbeat_s=1) as sim:
        port = localkafka.free_port()
        proc = _start(_env(kafka, sim, port), tmp_path / "worker.log")
        try:
            await eventually_async(lambda: _ready(port), 60, "worker ready")
            await asyncio.sleep(2)
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(proc.wait, 15)
            elapsed = time.monotonic() - started
        finally:
            if proc.poll() is None:
                proc.kill()
        assert code == 0, (tmp_path / "worker.log").read_text()[-3000:]
        assert elapsed < 10, f"took {elapsed:.1f} s"
        stats = await sim.stats()
        assert not any(c["connected"] for c in stats["channels"]), "sockets closed on the way out"


async def test_no_secret_in_logs_metrics_or_errors(kafka: KafkaBroker, tmp_path: Path) -> None:
    """At DEBUG, through token revocation, 401s, 429s and reconnects, no secret or token is printed."""
    clients = f"bridge-client:{SECRET}"
    async with sim_process(agents=100, events_per_sec=50, seed=9, heartbeat_s=1, clients=clients) as sim:
        port = localkafka.free_port()
        env = _env(
            kafka,
            sim,
            port,
            BRIDGE_GENESYS_CLIENT_ID="bridge-client",
            BRIDGE_GENESYS_CLIENT_SECRET=SECRET,
            BRIDGE_LOG_LEVEL="DEBUG",
            BRIDGE_LOG_FORMAT="json",
        )
        log = tmp_path / "worker.log"
        proc = _start(env, log)
        metrics_text = ""
        try:
            await eventually_async(lambda: _ready(port), 60, "worker ready")
            await sim.admin("POST", "/sim/faults/revoke-tokens")
            await sim.admin("POST", "/sim/faults/http", status=429, count=3, pathPrefix="/api/v2/")
            await sim.admin("POST", "/sim/faults/drop")
            await asyncio.sleep(1)
            await eventually_async(lambda: _ready(port), 60, "worker ready again")
            async with httpx.AsyncClient() as client:
                metrics_text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
                readyz = (await client.get(f"http://127.0.0.1:{port}/readyz")).text
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.wait, 15)
        finally:
            if proc.poll() is None:
                proc.kill()
        text = log.read_text()
        assert "401" in str(await sim.stats()), "the revoked token was refused at least once"
        for output in (text, metrics_text, readyz):
            assert SECRET not in output
            assert not TOKEN_SHAPE.findall(output), TOKEN_SHAPE.findall(output)[:3]

        # Wrong credentials: the error names the problem, never the secret.
        bad = _env(kafka, sim, localkafka.free_port(), BRIDGE_GENESYS_CLIENT_SECRET="wrong-" + SECRET)
        result = subprocess.run(
            [sys.executable, "-m", "bridge", "run"],
            env=bad,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode != 0
        assert SECRET not in result.stdout + result.stderr
        assert "401" in result.stdout + result.stderr or "auth" in (result.stdout + result.stderr).lower()


def _exported_series(exposition: str) -> set[str]:
    """Series names a scrape can contain, from the # TYPE lines (present even before a first sample)."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if not line.startswith("# TYPE "):
            continue
        _, _, name, kind = line.split()
        if kind == "counter":
            names |= {name, name if name.endswith("_total") else f"{name}_total"}
        elif kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        else:
            names.add(name)
    return names


async def test_dashboard_and_alerts_use_only_what_a_running_worker_exports(
    kafka: KafkaBroker, tmp_path: Path
) -> None:
    """Scrape a live worker: every series the dashboard and the alert rules query is exported."""
    import json

    import yaml

    from tests.deploy.promql import metric_names
    from tests.deploy.test_alerts import ALERTS, PROMETHEUS_SERIES
    from tests.deploy.test_dashboard import DASHBOARD, expressions

    async with sim_process(agents=50, events_per_sec=20, seed=4, heartbeat_s=1) as sim:
        port = localkafka.free_port()
        proc = _start(_env(kafka, sim, port), tmp_path / "worker.log")
        try:
            await eventually_async(lambda: _ready(port), 60, "worker ready")
            async with httpx.AsyncClient() as client:
                exposition = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.wait, 15)
    exported = _exported_series(exposition) | PROMETHEUS_SERIES
    used: dict[str, str] = {}
    for expr in expressions(json.loads(DASHBOARD.read_text())):
        used |= dict.fromkeys(metric_names(expr), "dashboard")
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            used |= dict.fromkeys(metric_names(rule["expr"]), f"alert {rule['alert']}")
    missing = {name: where for name, where in used.items() if name not in exported}
    assert not missing, f"used but not exported by a running worker: {missing}"
    assert "bridge_shards_owned" in exported and "bridge_event_delivery_seconds_bucket" in exported
