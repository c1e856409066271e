"""Tombstones after a takeover: removed agents go, moved agents and other fleets' agents stay."""

from __future__ import annotations

import asyncio
import functools

import orjson
import pytest
from confluent_kafka import Producer

from bridge.fleet import Coordinator
from bridge.settings import Settings
from bridge.worker import genesys_rest
from tests.conftest import KafkaBroker
from tests.fleet.conftest import shard_map
from tests.worker.conftest import bridge_settings, eventually_async, read_topic, running_worker, sim_process

pytestmark = pytest.mark.kafka


def _latest_states(kafka: KafkaBroker, settings: Settings) -> dict[str, tuple[dict[str, object] | None, str]]:
    """user id → (latest state value or None for a tombstone, its bridge-id header)."""
    out: dict[str, tuple[dict[str, object] | None, str]] = {}
    for key, value, headers in read_topic(kafka, settings.topic_agent_state):
        out[key] = (value, (headers.get("bridge-id") or b"").decode())
    return out


def _plant(kafka: KafkaBroker, topic: str, user_id: str, value: dict[str, object], bridge_id: str) -> None:
    producer = Producer(kafka.config())
    producer.produce(
        topic, key=user_id.encode(), value=orjson.dumps(value), headers=[("bridge-id", bridge_id)]
    )
    assert producer.flush(10) == 0


async def _write_map_while_no_one_owns_it(settings: Settings) -> None:
    """The coordinator's next epoch, written while the shards have no running owner."""
    client = settings.clients()[0]
    rest = genesys_rest(settings, client)

    async def roster() -> list[str]:
        return [u.id for u in await rest.active_users()]

    coordinator = Coordinator(settings, roster, clients=1)
    try:
        coordinator._producer = await asyncio.to_thread(coordinator._start_producer)
        await coordinator.refresh()
    finally:
        await rest.aclose()


async def test_a_new_owner_tombstones_agents_removed_while_the_shard_had_no_owner(kafka: KafkaBroker) -> None:
    """Removed in an epoch the old owner never saw: tombstoned; a moved or foreign agent is not.

    Then, removed in place: tombstoned, unless another fleet wrote its latest state.
    """
    async with sim_process(agents=6, events_per_sec=0, seed=5, heartbeat_s=1, paused=True) as sim:
        settings = bridge_settings(kafka, sim, shard_capacity=3, roster_refresh_s=1.0)
        async with running_worker(settings) as first:
            await first.wait_ready()
            assert await first.stop() == 0
        mapped = await asyncio.to_thread(shard_map, kafka, settings)
        shard0, shard1 = list(mapped[0].users), list(mapped[1].users)
        removed, moved = shard1[0], shard0[0]
        states = await asyncio.to_thread(_latest_states, kafka, settings)
        assert states[removed][0] is not None and states[removed][1] == settings.id

        # Shard 0 owns `moved` now but its latest state still names shard 1 (a move
        # whose new shard had nothing to write); another fleet wrote `foreign` for shard 1.
        template = states[moved][0]
        assert template is not None
        await asyncio.to_thread(
            _plant, kafka, settings.topic_agent_state, moved, {**template, "shard": 1}, settings.id
        )
        await asyncio.to_thread(
            _plant,
            kafka,
            settings.topic_agent_state,
            "foreign-agent",
            {**template, "userId": "foreign-agent", "shard": 1},
            "another-fleet",
        )
        await sim.admin("DELETE", f"/sim/users/{removed}")
        await _write_map_while_no_one_owns_it(settings)
        assert removed not in (await asyncio.to_thread(shard_map, kafka, settings))[1].users

        plain, foreign = shard0[1], shard0[2]
        async with running_worker(settings) as second:
            await second.wait_ready()
            await asyncio.sleep(1)  # the tombstones commit with the first transactions
            states = await asyncio.to_thread(functools.partial(_latest_states, kafka, settings))
            assert states[removed][0] is None, "the removed agent keeps a live state"
            assert states[moved][0] is not None, "a moved agent was tombstoned"
            assert states["foreign-agent"][0] is not None, "another fleet's agent was tombstoned"

            # Removed in place: `foreign`'s latest state is another fleet's by now.
            template = states[foreign][0]
            assert template is not None
            await asyncio.to_thread(
                _plant, kafka, settings.topic_agent_state, foreign, template, "another-fleet"
            )
            for uid in (plain, foreign):
                await sim.admin("DELETE", f"/sim/users/{uid}")

            async def plain_tombstoned() -> bool:
                latest = await asyncio.to_thread(_latest_states, kafka, settings)
                return plain in latest and latest[plain][0] is None

            await eventually_async(plain_tombstoned, 20, "the agent removed in place is tombstoned")
            assert await second.stop() == 0
        states = await asyncio.to_thread(functools.partial(_latest_states, kafka, settings))
        assert states[foreign] == (template, "another-fleet"), "another fleet's latest state was tombstoned"
        for uid in [shard0[0], *shard1[1:]]:
            assert states[uid][0] is not None, uid
