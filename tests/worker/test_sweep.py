"""The background sweep end to end: a change whose frame was lost reaches Kafka within one interval."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from bridge import metrics
from bridge.sweep import SWEEP_IN_FLIGHT_GRACE_S
from tests.conftest import KafkaBroker
from tests.worker.conftest import bridge_settings, read_topic, running_worker, sim_process

pytestmark = pytest.mark.kafka

SWEEP_INTERVAL_S = 2.0


async def test_a_lost_frame_is_corrected_by_the_sweep(kafka: KafkaBroker) -> None:
    """The simulator drops one change frame (socket healthy): the sweep finds it, counts it, and the
    change is written once, from Genesys's history (the sweep's own backfill, a gap record of cause
    sweep), with its real time; the compacted state is right, and there is no reconnect."""
    async with sim_process(agents=40, seed=5, heartbeat_s=1, paused=True) as sim:
        settings = bridge_settings(kafka, sim, sweep_interval_s=SWEEP_INTERVAL_S)
        async with running_worker(settings) as running:
            await running.wait_ready()
            (shard,) = running.worker.shards
            connects = shard.stats.connects
            before = float(metrics.SWEEP_CORRECTIONS._value.get())
            user = sorted((await sim.admin("GET", "/sim/truth"))["users"])[0]
            await sim.admin("POST", "/sim/faults/frames", kind="drop", count=1)
            lost = await sim.admin("PUT", f"/sim/users/{user}/presence", systemPresence="TRAINING")
            assert (await sim.stats())["framesLost"] >= 1
            deadline = time.monotonic() + SWEEP_IN_FLIGHT_GRACE_S + 3 * SWEEP_INTERVAL_S + 10
            corrected: list[dict[str, Any]] = []
            while not corrected:
                assert time.monotonic() < deadline, "the sweep did not correct the lost change"
                await asyncio.sleep(0.5)
                records = await asyncio.to_thread(read_topic, kafka, settings.topic_presence)
                corrected = [
                    v
                    for _k, v, _h in records
                    if v["userId"] == user
                    and v["systemPresence"] == "TRAINING"
                    and v["changedAt"] == lost["changedAt"]
                ]
            assert [v["origin"] for v in corrected] == ["backfill"]
            gaps = [v for _k, v, _h in await asyncio.to_thread(read_topic, kafka, settings.topic_gaps)]
            assert [(g["cause"], g["recovered"]) for g in gaps if g["cause"] == "sweep"] == [("sweep", True)]
            assert float(metrics.SWEEP_CORRECTIONS._value.get()) >= before + 1
            assert shard.sweep is not None and shard.sweep.stats.corrections >= 1
            assert shard.stats.connects == connects, "no reconnect: the socket was healthy throughout"
            states = await asyncio.to_thread(read_topic, kafka, settings.topic_agent_state)
            last = [v for k, v, _h in states if k == user][-1]
            assert last["presence"]["systemPresence"] == "TRAINING"
            assert await running.stop() == 0
