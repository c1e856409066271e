"""Benchmark: how long a SIGKILLed worker's shards stay without an owner.

A fleet of worker processes (``python -m bridge run``) streams a simulated
org into a real broker. Each run SIGKILLs the worker that owns the most
shards and measures, for every shard it owned:

- **first record**: SIGKILL → the first record of that shard written by its
  new owner becomes visible to a ``read_committed`` consumer;
- **reconciled**: SIGKILL → the new owner's reconciliation of that shard is
  complete (from its ``/readyz``, ``reconciledAt``).

Then a replacement worker is started and the fleet settles before the next
run. Settings are the worker's defaults (session timeout, heartbeat,
protocol) unless given. Run by hand::

    .venv/bin/python -m tests.bench.bench_takeover [--runs 5] [--protocol classic|consumer]

Target with default settings: median ≤ 10 s, worst ≤ 20 s (first record).
:func:`measure_takeover` returns the figures for the ``make bench`` table.
It uses the broker named by ``BRIDGE_TEST_KAFKA`` or starts its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from bridge.ports import free_port
from bridge.settings import Settings
from tests.conftest import TEST_KAFKA_ENV, KafkaBroker, localkafka
from tests.fleet.conftest import Fleet
from tests.worker.conftest import SimProcess, bridge_settings, start_sim_process

DEFAULT_RUNS = 5
WORKERS = 3
AGENTS = 1500
SHARD_CAPACITY = 300  # → 5 shards over 3 workers: the victim owns 2
EVENTS_PER_SEC = 150.0
RUN_TIMEOUT_S = 120.0
SETTLE_TIMEOUT_S = 120.0
PAUSE_BETWEEN_RUNS_S = 2.0
POLL_S = 0.1
#: Only the fleet's own timings that make no difference to takeover are shortened.
BENCH_OVERRIDES: dict[str, Any] = {"log_level": "INFO"}


@contextlib.contextmanager
def bench_broker() -> Iterator[KafkaBroker]:
    """The broker named by ``BRIDGE_TEST_KAFKA``, or one of its own in a temporary folder."""
    external = os.environ.get(TEST_KAFKA_ENV)
    if external:
        yield KafkaBroker(external, "external", AdminClient({"bootstrap.servers": external}))
        return
    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as tmp:
        broker = localkafka.start(Path(tmp), port=free_port(), quiet=True)
        try:
            admin = AdminClient({"bootstrap.servers": broker.bootstrap})
            yield KafkaBroker(broker.bootstrap, localkafka.kafka_version(), admin, Path(tmp))
        finally:
            localkafka.stop(Path(tmp))


@contextlib.asynccontextmanager
async def _sim() -> AsyncIterator[SimProcess]:
    proc, base_url = await asyncio.to_thread(
        start_sim_process,
        agents=AGENTS,
        events_per_sec=EVENTS_PER_SEC,
        heartbeat_s=1,
        rate_limit_per_min=100_000,
        seed=5,
    )
    http = httpx.AsyncClient(base_url=base_url, timeout=30)
    try:
        yield SimProcess(proc, base_url, http)
    finally:
        await http.aclose()
        proc.terminate()
        proc.wait(10)


class _Watcher:
    """Reads the event and state topics (read_committed) from their ends; first sighting per shard."""

    def __init__(self, kafka: KafkaBroker, settings: Settings) -> None:
        self._consumer = Consumer(
            kafka.config(
                **{
                    "group.id": f"bench-{uuid.uuid4().hex[:8]}",
                    "isolation.level": "read_committed",
                    "enable.auto.commit": False,
                    "fetch.wait.max.ms": 20,
                }
            )
        )
        self._topics = [settings.topic_presence, settings.topic_routing_status, settings.topic_agent_state]

    def start_at_end(self) -> None:
        parts = []
        for topic in self._topics:
            md = self._consumer.list_topics(topic, timeout=10).topics[topic]
            for p in md.partitions:
                _low, high = self._consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                parts.append(TopicPartition(topic, p, high))
        self._consumer.assign(parts)

    def first_per_shard(self, shards: set[int], since: float, timeout_s: float) -> dict[int, float]:
        """Shard → seconds from ``since`` to the first record of it seen after ``since``."""
        seen: dict[int, float] = {}
        deadline = time.monotonic() + timeout_s
        while shards - set(seen) and time.monotonic() < deadline:
            msg = self._consumer.poll(POLL_S)
            if msg is None or msg.value() is None:
                continue
            if msg.error() is not None and msg.error().code() != KafkaError._PARTITION_EOF:
                continue
            now = time.time()
            shard = orjson.loads(msg.value()).get("shard")
            _kind, created_ms = msg.timestamp()
            if shard in shards and shard not in seen and created_ms / 1000 >= since:
                seen[shard] = now - since
        return seen

    def close(self) -> None:
        self._consumer.close()


async def _reconciled(fleet: Fleet, shards: set[int], since: float, timeout_s: float) -> dict[int, float]:
    out: dict[int, float] = {}
    deadline = time.monotonic() + timeout_s
    while shards - set(out) and time.monotonic() < deadline:
        for body in (await fleet.views()).values():
            for p, info in body.get("shards", {}).items():
                at = info.get("reconciledAt")
                if int(p) in shards and int(p) not in out and at is not None and at > since:
                    out[int(p)] = at - since
        await asyncio.sleep(POLL_S)
    return out


def _summary(samples: list[float]) -> dict[str, Any]:
    return {
        "median": round(statistics.median(samples), 2) if samples else None,
        "worst": round(max(samples), 2) if samples else None,
        "samples": [round(s, 2) for s in samples],
    }


async def _measure(runs: int, overrides: dict[str, Any]) -> dict[str, Any]:
    with bench_broker() as kafka, tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        async with _sim() as sim:
            settings = bridge_settings(
                kafka, sim, shard_capacity=SHARD_CAPACITY, **{**BENCH_OVERRIDES, **overrides}
            )
            # bridge_settings shortens heartbeats for the simulator; takeover uses the defaults.
            for name in ("kafka_session_timeout_ms", "kafka_heartbeat_interval_ms", "kafka_group_protocol"):
                if name not in overrides:
                    setattr(settings, name, Settings.model_fields[name].default)
            shards = -(-AGENTS // SHARD_CAPACITY)
            fleet = Fleet(settings, Path(tmp))
            first: list[float] = []
            reconciled: list[float] = []
            try:
                for _ in range(WORKERS):
                    fleet.start()
                await fleet.wait_settled(shards, timeout_s=SETTLE_TIMEOUT_S)
                for run in range(runs):
                    views = await fleet.views()
                    victim = max(fleet.live(), key=lambda w: len(views[w.name]["partitions"]))
                    orphans = set(views[victim.name]["partitions"])
                    watcher = _Watcher(kafka, settings)
                    await asyncio.to_thread(watcher.start_at_end)
                    killed_at = time.time()
                    victim.kill()
                    reconcile_task = asyncio.create_task(
                        _reconciled(fleet, orphans, killed_at, RUN_TIMEOUT_S)
                    )
                    seen = await asyncio.to_thread(watcher.first_per_shard, orphans, killed_at, RUN_TIMEOUT_S)
                    done = await reconcile_task
                    watcher.close()
                    first += list(seen.values())
                    reconciled += list(done.values())
                    print(
                        f"run {run + 1}: shards {sorted(orphans)} first record "
                        f"{[round(v, 2) for v in seen.values()]} s, reconciled "
                        f"{[round(v, 2) for v in done.values()]} s",
                        flush=True,
                    )
                    if len(seen) < len(orphans) or len(done) < len(orphans):
                        raise RuntimeError(f"run {run + 1}: some shards were not taken over in time")
                    fleet.start()
                    await fleet.wait_settled(shards, timeout_s=SETTLE_TIMEOUT_S)
                    await asyncio.sleep(PAUSE_BETWEEN_RUNS_S)
            finally:
                fleet.stop_all()
    return {
        "runs": runs,
        "protocol": settings.kafka_group_protocol,
        "session_timeout_ms": settings.kafka_session_timeout_ms,
        "heartbeat_interval_ms": settings.kafka_heartbeat_interval_ms,
        "first_record_s": _summary(first),
        "reconciled_s": _summary(reconciled),
    }


def measure_takeover(runs: int = DEFAULT_RUNS, **overrides: Any) -> dict[str, Any]:
    """Run the benchmark; ``overrides`` are Settings fields (e.g. ``kafka_group_protocol="consumer"``).

    Returns ``{"runs", "protocol", "session_timeout_ms", "heartbeat_interval_ms",
    "first_record_s": {"median", "worst", "samples"}, "reconciled_s": {...}}``.
    """
    return asyncio.run(_measure(runs, overrides))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS)
    parser.add_argument("--protocol", choices=["classic", "consumer"], default=None)
    parser.add_argument("--session-timeout-ms", type=int, default=None)
    args = parser.parse_args()
    overrides: dict[str, Any] = {}
    if args.protocol:
        overrides["kafka_group_protocol"] = args.protocol
    if args.session_timeout_ms:
        overrides["kafka_session_timeout_ms"] = args.session_timeout_ms
    result = measure_takeover(args.runs, **overrides)
    first, rec = result["first_record_s"], result["reconciled_s"]
    print(
        f"takeover over {result['runs']} runs ({result['protocol']}, session "
        f"{result['session_timeout_ms']} ms, heartbeat {result['heartbeat_interval_ms']} ms): "
        f"first record median {first['median']} s, worst {first['worst']} s; "
        f"reconciled median {rec['median']} s, worst {rec['worst']} s"
    )


if __name__ == "__main__":
    main()
