"""The worker end to end on a small org: simulator → shards → real Kafka."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.conftest import KafkaBroker
from tests.worker.conftest import (
    Delivery,
    bridge_settings,
    event_records,
    per_user_ordered,
    run_audit,
    running_worker,
    sim_process,
)

pytestmark = pytest.mark.kafka


async def test_small_org_streams_every_change_once(kafka: KafkaBroker) -> None:
    """100 agents on 2 shards: every simulator change lands once, in order, and audit agrees."""
    async with sim_process(agents=100, events_per_sec=50, seed=3, heartbeat_s=1, paused=True) as sim:
        settings = bridge_settings(kafka, sim, shard_capacity=60)
        async with running_worker(settings) as running:
            await running.wait_ready()
            assert len(running.worker.shards) == 2
            start_seq = (await sim.stats())["lastSeq"]
            await sim.admin("POST", "/sim/generator", paused=False)
            await asyncio.sleep(5)
            await sim.pause()
            log = [e for e in await sim.events() if e["seq"] > start_seq]
            assert len(log) > 100
            deadline = time.monotonic() + 30
            while True:
                records = await asyncio.to_thread(event_records, kafka, settings)
                delivery = Delivery.compare(log, records)
                if not delivery.missing or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
            assert delivery.missing == []
            assert delivery.duplicated == []
            assert per_user_ordered(records)
            mismatches, lines = await run_audit(settings)
            assert mismatches == 0, lines
            assert await running.stop() == 0
