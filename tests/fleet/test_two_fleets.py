"""Two fleets (two BRIDGE_IDs) on one broker, sharing the data topics: neither corrupts the other."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

import pytest

from bridge.settings import DEFAULT_TOPIC_SHARD_MAP, Settings
from bridge.worker import Worker, genesys_rest
from tests.conftest import KafkaBroker
from tests.worker.conftest import SimProcess, bridge_settings, eventually, read_topic, sim_process

pytestmark = pytest.mark.kafka


async def _roster(settings: Settings) -> list[str]:
    rest = genesys_rest(settings, settings.clients()[0])
    try:
        return sorted(u.id for u in await rest.active_users())
    finally:
        await rest.aclose()


@contextlib.asynccontextmanager
async def _worker(settings: Settings, users: Sequence[str]) -> AsyncIterator[Worker]:
    worker = Worker(settings)
    task = asyncio.create_task(worker.run(list(users)))
    try:
        yield worker
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 30)


def _ready(worker: Worker) -> bool:
    return bool(worker.shards) and worker.readiness()[0]


def _two(kafka: KafkaBroker, sim: SimProcess, topic_shard_map: str) -> tuple[Settings, Settings]:
    """Two fleets' settings: distinct ids, the same data topics."""
    a = bridge_settings(kafka, sim, shard_capacity=10, topic_shard_map=topic_shard_map)
    data = {
        k: getattr(a, k) for k in ("topic_presence", "topic_routing_status", "topic_agent_state", "topic_dlq")
    }
    b = bridge_settings(kafka, sim, shard_capacity=10, topic_shard_map=topic_shard_map, **data)
    return a, b


def _states(kafka: KafkaBroker, topic: str) -> dict[str, tuple[object, bytes]]:
    return {k: (v, h.get("bridge-id", b"")) for k, v, h in read_topic(kafka, topic)}


async def test_two_fleets_with_their_own_ids_share_the_data_topics(kafka: KafkaBroker) -> None:
    """Default control topics derive from each BRIDGE_ID: both fleets stream their own agents."""
    async with sim_process(agents=30, events_per_sec=0, seed=8, heartbeat_s=1, paused=True) as sim:
        a, b = _two(kafka, sim, DEFAULT_TOPIC_SHARD_MAP)
        assert (a.topic_shard_map, b.topic_shard_map) == (f"{a.id}.shard-map.v1", f"{b.id}.shard-map.v1")
        users = await _roster(a)
        ours, theirs = users[:15], users[15:]
        async with _worker(a, ours) as wa, _worker(b, theirs) as wb:
            await eventually(lambda: _ready(wa) and _ready(wb), 60, "both fleets ready")
            assert {u for s in wa.shards for u in s.users} == set(ours)
            assert {u for s in wb.shards for u in s.users} == set(theirs)
            await asyncio.sleep(1)
        states = await asyncio.to_thread(_states, kafka, a.topic_agent_state)
        assert all(states[u][0] is not None and states[u][1] == a.id.encode() for u in ours)
        assert all(states[u][0] is not None and states[u][1] == b.id.encode() for u in theirs)


async def test_a_fleet_never_applies_another_fleets_map_on_a_shared_control_topic(
    kafka: KafkaBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """Misconfigured shared control topic: the second fleet logs an ERROR, runs nothing, writes nothing."""
    async with sim_process(agents=30, events_per_sec=0, seed=9, heartbeat_s=1, paused=True) as sim:
        a, b = _two(kafka, sim, f"shared-map-{id(sim)}")
        users = await _roster(a)
        ours, theirs = users[:15], users[15:]
        async with _worker(a, ours) as wa:
            await eventually(lambda: _ready(wa), 60, "the first fleet ready")
            with caplog.at_level(logging.ERROR, logger="bridge.fleet"):
                async with _worker(b, theirs) as wb:

                    def refused() -> bool:
                        fleet = wb.fleet
                        return fleet is not None and fleet.joined and "never applied" in caplog.text

                    await eventually(refused, 30, "the second fleet sees the foreign map")
                    await asyncio.sleep(6)  # a coordinator retry
                    assert wb.shards == []
                    assert not wb.readiness()[0]
                    assert _ready(wa)
            records = await asyncio.to_thread(read_topic, kafka, a.topic_shard_map)
            assert records and all(h.get("bridge-id") == a.id.encode() for _k, _v, h in records)
            assert {u for s in wa.shards for u in s.users} == set(ours)
        states = await asyncio.to_thread(_states, kafka, a.topic_agent_state)
        assert all(states[u][0] is not None for u in ours), "the first fleet's agents were tombstoned"
        assert not [u for u in theirs if u in states]
