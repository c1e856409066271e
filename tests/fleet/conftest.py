"""Harness for the fleet tests: workers as ``python -m bridge run`` processes.

The simulator and the broker come from tests/worker's harness; here every
worker is its own process configured through ``BRIDGE_*`` variables, with
its own metrics port, so tests can SIGKILL, SIGSTOP/SIGCONT or SIGTERM it and
read its ``/readyz`` (which shards it owns, whether it coordinates) and
``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pydantic import AliasChoices, SecretStr

from bridge.fleet import MapRecord
from bridge.ports import free_port
from bridge.settings import ENV_PREFIX, Settings
from tests.conftest import KafkaBroker
from tests.worker.conftest import SimProcess, bridge_settings, read_topic

#: Fleet timings for tests: quick failure detection and refreshes, a short drain.
FLEET_OVERRIDES: dict[str, Any] = {
    "kafka_session_timeout_ms": 6000,
    "kafka_heartbeat_interval_ms": 1000,
    "roster_refresh_s": 3.0,
    "drain_timeout_s": 4.0,
    "log_level": "INFO",
}
#: The fleet's simulator: fast heartbeats, no rate limit to speak of, and a 1 s analytics delay
#: (Genesys's and the simulator's default is 5 s: tests/worker/test_backfill.py and the chaos runs
#: keep it) so that a takeover's backfill does not add 4 s to every wait for convergence.
SIM_OPTIONS: dict[str, Any] = {
    "heartbeat_s": 1,
    "rate_limit_per_min": 100_000,
    "seed": 11,
    "analytics_delay_s": 1.0,
}


def settings_env(settings: Settings) -> dict[str, str]:
    """The ``BRIDGE_*`` environment that reproduces ``settings`` in a worker process.

    Only the settings chosen explicitly: the others keep the worker's own
    defaults (an explicit ``BRIDGE_SECRETS_DIR``, say, must exist).
    """
    env: dict[str, str] = {}
    for name in sorted(settings.model_fields_set):
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, list):
            value = json.dumps(
                [{"clientId": c.client_id, "clientSecret": c.client_secret.get_secret_value()} for c in value]
            )
        alias = type(settings).model_fields[name].validation_alias
        env[str(alias.choices[0]) if isinstance(alias, AliasChoices) else f"{ENV_PREFIX}{name.upper()}"] = (
            str(value)
        )
    return env


def fleet_settings(kafka: KafkaBroker, sim: SimProcess, **overrides: Any) -> Settings:
    return bridge_settings(kafka, sim, **{**FLEET_OVERRIDES, **overrides})


@dataclass
class WorkerProcess:
    """One ``presence-bridge run`` process."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    async def readyz(self) -> dict[str, Any] | None:
        """The /readyz body, or None when the process does not answer."""
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                return dict((await client.get(f"{self.url}/readyz")).json())
        except (httpx.HTTPError, ValueError):
            return None

    async def metric(self, name: str) -> float:
        """Sum of every sample of a metric (all label sets); 0 when absent."""
        async with httpx.AsyncClient(timeout=5) as client:
            text = (await client.get(f"{self.url}/metrics")).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and (line[len(name)] in " {"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(10)

    async def terminate(self, timeout_s: float = 15.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.proc.wait, timeout_s)


@dataclass
class Fleet:
    """Worker processes sharing one settings object."""

    settings: Settings
    tmp: Path
    workers: list[WorkerProcess] = field(default_factory=list)
    _count: int = 0

    def start(self, **env_overrides: str) -> WorkerProcess:
        self._count += 1
        name = f"w{self._count}"
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
        env.update(settings_env(self.settings))
        env.update({"BRIDGE_METRICS_PORT": str(port), "BRIDGE_METRICS_HOST": "127.0.0.1"})
        env.update(env_overrides)
        log_path = self.tmp / f"{name}.log"
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bridge", "run"], env=env, stdout=out, stderr=subprocess.STDOUT
            )
        worker = WorkerProcess(name, proc, port, log_path)
        self.workers.append(worker)
        return worker

    def live(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.alive()]

    async def views(self, workers: Iterable[WorkerProcess] | None = None) -> dict[str, dict[str, Any]]:
        out = {}
        for w in self.live() if workers is None else workers:
            body = await w.readyz()
            if body is not None:
                out[w.name] = body
        return out

    async def wait_settled(
        self, shards: int, workers: Iterable[WorkerProcess] | None = None, timeout_s: float = 90.0
    ) -> dict[str, dict[str, Any]]:
        """Every given worker ready and together they own each of ``shards`` partitions exactly once."""
        chosen = list(workers) if workers is not None else None
        deadline = time.monotonic() + timeout_s
        last: dict[str, dict[str, Any]] = {}
        while time.monotonic() < deadline:
            last = await self.views(chosen)
            expected = len(chosen) if chosen is not None else len(self.live())
            owned = sorted(p for v in last.values() for p in v.get("partitions", []))
            if (
                len(last) == expected
                and all(v["ready"] for v in last.values())
                and owned == list(range(shards))
            ):
                return last
            await asyncio.sleep(0.5)
        raise AssertionError(f"fleet did not settle on {shards} shards: {json.dumps(last)[:3000]}")

    async def owner_of(self, partition: int) -> WorkerProcess | None:
        for w in self.live():
            body = await w.readyz()
            if body is not None and partition in body.get("partitions", []):
                return w
        return None

    def stop_all(self) -> None:
        for w in self.workers:
            if w.alive():
                w.kill()


@contextlib.asynccontextmanager
async def fleet_of(settings: Settings, tmp: Path, count: int) -> AsyncIterator[Fleet]:
    fleet = Fleet(settings, tmp)
    try:
        for _ in range(count):
            fleet.start()
        yield fleet
    finally:
        fleet.stop_all()


def shard_map(kafka: KafkaBroker, settings: Settings) -> dict[int, MapRecord]:
    """The latest control record of each shard (highest epoch)."""
    out: dict[int, MapRecord] = {}
    for _key, value, _headers in read_topic(kafka, settings.topic_shard_map):
        if value is None:
            continue
        record = MapRecord.decode(json.dumps(value).encode())
        if record.shard not in out or record.epoch >= out[record.shard].epoch:
            out[record.shard] = record
    return out


def subscriptions(stats: dict[str, Any]) -> dict[str, int]:
    """user id → number of connected channels it is subscribed on."""
    count: dict[str, int] = {}
    for channel in stats["channels"]:
        if channel["connected"]:
            for uid in channel["userIds"]:
                count[uid] = count.get(uid, 0) + 1
    return count


def dump_logs(fleet: Fleet, tail: int = 60) -> str:
    return "\n".join(f"--- {w.name} ---\n" + "\n".join(w.log().splitlines()[-tail:]) for w in fleet.workers)
