"""Harness for the worker's integration tests: the simulator as a process, the real broker.

The simulator runs as ``presence-bridge sim`` in its own process (as in
production, Genesys is not in the bridge's event loop); the worker runs
in-process so tests can read its shards' state. Every test gets its own
``BRIDGE_ID`` and topic names, so tests never see each other's records.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import orjson
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from bridge.genesys.protocol import parse_timestamp
from bridge.model import Kind, PresenceValue, RoutingValue, event_id
from bridge.settings import Settings
from bridge.worker import Worker
from tests.conftest import KafkaBroker

READY_PREFIX = "simulator listening on "
SIM_START_TIMEOUT_S = 30.0


@dataclass
class SimProcess:
    """A simulator process and an admin client on it."""

    proc: subprocess.Popen[str]
    base_url: str
    http: httpx.AsyncClient

    async def admin(self, method: str, path: str, **json: Any) -> Any:
        response = await self.http.request(method, path, json=json if json else None)
        response.raise_for_status()
        return response.json() if response.content else None

    async def events(self, since: int = 0) -> list[dict[str, Any]]:
        """The change log after sequence number ``since`` (default: all of it), oldest first."""
        out: list[dict[str, Any]] = []
        while True:
            page = (await self.http.get("/sim/events", params={"since": since, "limit": 100_000})).json()
            out.extend(page["events"])
            if not page["events"] or page["events"][-1]["seq"] >= page["lastSeq"]:
                return out
            since = page["events"][-1]["seq"]

    async def stats(self) -> dict[str, Any]:
        return dict((await self.http.get("/sim/stats")).json())

    async def pause(self) -> None:
        await self.admin("POST", "/sim/generator", paused=True)


def start_sim_process(**options: Any) -> tuple[subprocess.Popen[str], str]:
    """Start ``presence-bridge sim`` with ``--option value`` pairs; wait for its ready line."""
    args = [sys.executable, "-m", "bridge", "sim", "--host", "127.0.0.1", "--port", "0"]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            args.append(flag)
        elif value is not False and value is not None:
            args += [flag, str(value)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + SIM_START_TIMEOUT_S
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith(READY_PREFIX):
            return proc, line[len(READY_PREFIX) :].strip()
    proc.kill()
    raise RuntimeError("simulator did not start")


@contextlib.asynccontextmanager
async def sim_process(**options: Any) -> AsyncIterator[SimProcess]:
    proc, base_url = await asyncio.to_thread(start_sim_process, **options)
    http = httpx.AsyncClient(base_url=base_url, timeout=30)
    try:
        yield SimProcess(proc, base_url, http)
    finally:
        await http.aclose()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def bridge_settings(kafka: KafkaBroker, sim: SimProcess, **overrides: Any) -> Settings:
    """Settings for one test: unique id and topics, fast timings for the simulator."""
    tag = uuid.uuid4().hex[:8]
    values: dict[str, Any] = {
        "id": f"test-{tag}",
        "genesys_api_url": sim.base_url,
        "genesys_login_url": sim.base_url,
        "genesys_client_id": "sim-client",
        "genesys_client_secret": "sim-secret",
        "kafka_bootstrap_servers": kafka.bootstrap,
        "topic_presence": f"presence-{tag}",
        "topic_routing_status": f"routing-{tag}",
        "topic_agent_state": f"state-{tag}",
        "topic_dlq": f"dlq-{tag}",
        "topic_gaps": f"gaps-{tag}",
        "topic_shard_map": f"map-{tag}",
        "topic_partitions": 3,
        "metrics_port": 0,
        "heartbeat_interval_s": 1.0,
        "ping_interval_s": 1.0,
        "pong_timeout_s": 1.5,
        "backoff_initial_s": 0.2,
        "backoff_max_s": 2.0,
        "rest_budget_per_min": 6000,
        "txn_max_ms": 50,
        "log_format": "text",
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class RunningWorker:
    """A worker running in this event loop."""

    worker: Worker
    task: asyncio.Task[int]
    settings: Settings

    async def wait_ready(self, timeout_s: float = 60.0) -> None:
        def ready() -> bool:
            if self.task.done():
                raise AssertionError(f"worker ended early: {self.task.exception()!r}")
            return _ready(self.worker)

        await eventually(ready, timeout_s, "worker ready")

    async def wait_reconciled(self, after: float, timeout_s: float = 60.0) -> None:
        """Every shard finished a reconciliation that started after ``after`` (monotonic)."""

        def done() -> bool:
            return bool(self.worker.shards) and all(
                s.stats.last_reconciled is not None and s.stats.last_reconciled > after
                for s in self.worker.shards
            )

        await eventually(done, timeout_s, "reconciled")

    async def stop(self) -> int:
        self.worker.request_stop()
        return await asyncio.wait_for(self.task, 30)


def _ready(worker: Worker) -> bool:
    return (
        bool(worker.shards)
        and worker.readiness()[0]
        and all(s.stats.last_reconciled is not None for s in worker.shards)
    )


async def eventually(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def eventually_async(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.asynccontextmanager
async def running_worker(settings: Settings, **worker_kwargs: Any) -> AsyncIterator[RunningWorker]:
    worker = Worker(settings, **worker_kwargs)
    task = asyncio.create_task(worker.run())
    running = RunningWorker(worker, task, settings)
    try:
        yield running
    finally:
        if not task.done():
            worker.request_stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 30)


# ----------------------------------------------------------------------------- Kafka side


def read_topic(kafka: KafkaBroker, topic: str, *, timeout_s: float = 30.0) -> list[Any]:
    """Every committed record of a topic (read_committed), as (key, value-dict or None, headers)."""
    consumer = Consumer(
        kafka.config(
            **{
                "group.id": f"verify-{uuid.uuid4().hex[:8]}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            }
        )
    )
    try:
        md = consumer.list_topics(topic, timeout=10).topics[topic]
        parts = [TopicPartition(topic, p, 0) for p in md.partitions]
        ends = {}
        for tp in parts:
            _low, high = consumer.get_watermark_offsets(tp, timeout=10)
            ends[tp.partition] = high
        consumer.assign(parts)
        remaining = {p for p, high in ends.items() if high > 0}
        out: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while remaining and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    remaining.discard(msg.partition())
                    continue
                raise KafkaException(msg.error())
            value = orjson.loads(msg.value()) if msg.value() is not None else None
            out.append((msg.key().decode() if msg.key() else None, value, dict(msg.headers() or [])))
            if msg.offset() + 1 >= ends[msg.partition()]:
                remaining.discard(msg.partition())
        return out
    finally:
        consumer.close()


def event_records(kafka: KafkaBroker, settings: Settings) -> list[dict[str, Any]]:
    """Every committed presence and routing-status record."""
    return [
        value
        for topic in (settings.topic_presence, settings.topic_routing_status)
        for _key, value, _headers in read_topic(kafka, topic)
    ]


def expected_event_id(entry: dict[str, Any]) -> str:
    """The eventId the bridge must give a change of the simulator's log."""
    changed_at = parse_timestamp(entry["changedAt"])
    assert isinstance(changed_at, datetime)
    if entry["kind"] == "presence":
        value: PresenceValue | RoutingValue = PresenceValue(
            system_presence=entry["value"],
            presence_definition_id=entry.get("presenceDefinitionId"),
            message=entry.get("message"),
        )
        return event_id(entry["userId"], Kind.PRESENCE, changed_at, value)
    return event_id(entry["userId"], Kind.ROUTING_STATUS, changed_at, RoutingValue(entry["value"]))


@dataclass
class Delivery:
    """How the records in Kafka compare with the simulator's change log."""

    expected: list[str]
    produced: list[str]
    missing: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)

    @classmethod
    def compare(cls, log: list[dict[str, Any]], records: list[dict[str, Any]]) -> Delivery:
        expected = [expected_event_id(e) for e in log]
        produced = [r["eventId"] for r in records]
        seen: dict[str, int] = {}
        for eid in produced:
            seen[eid] = seen.get(eid, 0) + 1
        missing = [e for e in expected if e not in seen]
        duplicated = [e for e, n in seen.items() if n > 1]
        return cls(expected, produced, missing, duplicated)


def per_user_ordered(records: list[dict[str, Any]]) -> bool:
    """Within each (user, kind) the records' changedAt never goes backwards in topic order.

    Records with ``late: true`` are out of order by definition (and flagged so): skipped.
    """
    last: dict[tuple[str, str], str] = {}
    for record in records:
        if record.get("late"):
            continue
        key = (record["userId"], record["schema"])
        if key in last and record["changedAt"] < last[key]:
            return False
        last[key] = record["changedAt"]
    return True


async def run_audit(
    settings: Settings, grace_s: float = 5.0, *, allow_unobservable: bool = False
) -> tuple[int, list[str]]:
    """Run the audit in-process; returns (mismatches, printed lines)."""
    from bridge.audit import audit
    from bridge.worker import genesys_rest

    clients = settings.clients()
    rest = genesys_rest(settings, clients[0])
    lines: list[str] = []
    try:
        report = await audit(
            settings, rest, grace_s=grace_s, out=lines.append, allow_unobservable=allow_unobservable
        )
    finally:
        await rest.aclose()
    return report.failures, lines


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _quiet_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No BRIDGE_* variable of the developer's shell leaks into a test."""
    for key in list(os.environ):
        if key.startswith("BRIDGE_") and key != "BRIDGE_TEST_KAFKA":
            monkeypatch.delenv(key)
    yield
