"""Recovery after an abrupt socket drop, at 2,000 agents (issue 4's closing figures).

For each run: 2,000 agents on 3 shards at 200 changes/s against a local
broker; the simulator drops every socket; we measure

- drop → first record committed from after the drop (the consumer sees a
  record whose ``observedAt`` is later than the drop), and
- reconnect → reconciliation complete (the shards' own clocks).

Run: ``.venv/bin/python -m tests.bench.bench_recovery [--runs 5]``; needs a
broker (``make kafka-up`` or ``--bootstrap``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime

import orjson
from confluent_kafka import Consumer, TopicPartition

from tests.worker.conftest import bridge_settings, running_worker, sim_process

AGENTS = 2000
CAPACITY = 700
RATE = 200


def _iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def _first_record_after(
    bootstrap: str, topics: list[str], cutoff: list[str], timeout_s: float
) -> float | None:
    """Monotonic time of the first committed record observed after ``cutoff[0]`` (set once dropped)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    try:
        parts = []
        for topic in topics:
            md = consumer.list_topics(topic, timeout=10).topics[topic]
            for p in md.partitions:
                _low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                parts.append(TopicPartition(topic, p, high))
        consumer.assign(parts)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = consumer.poll(0.01)
            if msg is None or msg.error() or msg.value() is None:
                continue
            if cutoff and orjson.loads(msg.value())["observedAt"] > cutoff[0]:
                return time.monotonic()
        return None
    finally:
        consumer.close()


async def one_run(bootstrap: str) -> tuple[float, float]:
    from confluent_kafka.admin import AdminClient

    from tests.conftest import KafkaBroker

    broker = KafkaBroker(
        bootstrap=bootstrap, version="bench", admin=AdminClient({"bootstrap.servers": bootstrap})
    )
    async with sim_process(agents=AGENTS, events_per_sec=RATE, seed=1, heartbeat_s=1) as sim:
        settings = bridge_settings(broker, sim, shard_capacity=CAPACITY)
        async with running_worker(settings) as running:
            await running.wait_ready(120)
            await asyncio.sleep(3)
            topics = [settings.topic_presence, settings.topic_routing_status]
            cutoff: list[str] = []
            watcher = asyncio.create_task(
                asyncio.to_thread(_first_record_after, bootstrap, topics, cutoff, 90)
            )
            await asyncio.sleep(1)  # the watcher sits at the end of the topics
            cutoff.append(_iso(datetime.now(UTC)))
            t0 = time.monotonic()
            await sim.admin("POST", "/sim/faults/drop")
            await running.wait_reconciled(t0, 120)
            first = await watcher
            shards = running.worker.shards
            reconnect_to_reconciled = max(
                (s.stats.last_reconciled or 0) - (s.stats.last_connected or 0) for s in shards
            )
            return (first - t0 if first else float("nan")), reconnect_to_reconciled


async def main_async(runs: int, bootstrap: str) -> None:
    firsts, reconciles = [], []
    for i in range(runs):
        first, reconcile = await one_run(bootstrap)
        firsts.append(first)
        reconciles.append(reconcile)
        print(f"run {i + 1}: drop → first record {first:.2f} s; reconnect → reconciled {reconcile:.2f} s")
    print(
        "drop → first record after reconnect: "
        f"median {statistics.median(firsts):.2f} s, worst {max(firsts):.2f} s"
    )
    print(
        f"reconnect → reconciliation complete ({AGENTS} agents, {AGENTS // CAPACITY + 1} shards): "
        f"median {statistics.median(reconciles):.2f} s, worst {max(reconciles):.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    args = parser.parse_args()
    asyncio.run(main_async(args.runs, args.bootstrap))


if __name__ == "__main__":
    main()
