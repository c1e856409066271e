"""Agents removed while their shard's owner is frozen are tombstoned by the next owner (processes)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from tests.conftest import KafkaBroker
from tests.fleet.conftest import SIM_OPTIONS, dump_logs, fleet_of, fleet_settings, shard_map
from tests.worker.conftest import eventually_async, read_topic, sim_process

pytestmark = pytest.mark.kafka


async def test_agents_removed_while_the_owner_is_frozen_are_tombstoned(
    kafka: KafkaBroker, tmp_path: Path
) -> None:
    """SIGSTOP a shard's owner, delete agents, the map moves on: the new owner tombstones them."""
    async with sim_process(agents=120, events_per_sec=20, **SIM_OPTIONS) as sim:
        settings = fleet_settings(kafka, sim, shard_capacity=40)
        async with fleet_of(settings, tmp_path, 2) as fleet:
            try:
                views = await fleet.wait_settled(3)
                frozen = next(w for w in fleet.live() if not views[w.name]["coordinator"])
                other = next(w for w in fleet.live() if w is not frozen)
                shard = views[frozen.name]["partitions"][0]
                before = await asyncio.to_thread(shard_map, kafka, settings)
                removed = list(before[shard].users[:5])
                frozen.signal(signal.SIGSTOP)
                for uid in removed:
                    await sim.admin("DELETE", f"/sim/users/{uid}")

                async def map_dropped_them() -> bool:
                    m = await asyncio.to_thread(shard_map, kafka, settings)
                    return not set(removed) & set(m[shard].users)

                # Written by the coordinator within its 3 s refresh, before the 6 s session ends.
                await eventually_async(map_dropped_them, 6, "the map drops the deleted agents")
                await fleet.wait_settled(3, workers=[other], timeout_s=30)

                async def tombstoned() -> bool:
                    latest = {
                        k: v
                        for k, v, _h in await asyncio.to_thread(read_topic, kafka, settings.topic_agent_state)
                    }
                    return all(uid in latest and latest[uid] is None for uid in removed)

                await eventually_async(tombstoned, 15, "the deleted agents' states are tombstoned")
                assert await other.metric("bridge_orphans_tombstoned_total") >= len(removed)
                frozen.signal(signal.SIGCONT)
            except AssertionError:
                print(dump_logs(fleet))
                raise
