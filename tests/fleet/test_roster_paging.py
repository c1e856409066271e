"""The coordinator tells an agent a shifted roster page skipped from one who left."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from bridge.fleet import Coordinator
from bridge.settings import Settings
from bridge.topics import ensure_topics
from bridge.worker import genesys_rest
from tests.conftest import KafkaBroker
from tests.fleet.conftest import shard_map
from tests.worker.conftest import bridge_settings, sim_process

pytestmark = pytest.mark.kafka


async def _refresh(
    kafka: KafkaBroker,
    settings: Settings,
    roster: Callable[[], Awaitable[list[str]]],
    still_active: Callable[..., Awaitable[set[str]]] | None,
) -> set[str]:
    """One coordinator refresh; the agents of the map it leaves."""
    coordinator = Coordinator(settings, roster, clients=1, still_active=still_active)
    coordinator._producer = await asyncio.to_thread(coordinator._start_producer)
    await coordinator.refresh()
    mapped = await asyncio.to_thread(shard_map, kafka, settings)
    return {u for record in mapped.values() for u in record.users}


async def test_a_live_agent_missing_from_a_shifted_listing_keeps_its_shard(kafka: KafkaBroker) -> None:
    """A listing that skips a live agent (paging shifted by a deletion) removes only the deleted one."""
    async with sim_process(agents=6, events_per_sec=0, seed=5, paused=True) as sim:
        settings = bridge_settings(kafka, sim, shard_capacity=3)
        await asyncio.to_thread(ensure_topics, settings, shard_map_partitions=1)
        rest = genesys_rest(settings, settings.clients()[0])
        try:
            everyone = sorted(u.id for u in await rest.active_users())

            async def full() -> list[str]:
                return sorted(u.id for u in await rest.active_users())

            assert await _refresh(kafka, settings, full, rest.still_active) == set(everyone)

            deleted, skipped = everyone[0], everyone[1]
            await sim.admin("DELETE", f"/sim/users/{deleted}")

            async def shifted() -> list[str]:
                """What a deletion on a page already read does: the deleted one listed, a live one not."""
                return [u for u in everyone if u != skipped]

            assert await _refresh(kafka, settings, shifted, rest.still_active) == set(everyone)
            after = await _refresh(kafka, settings, full, rest.still_active)
            assert deleted not in after, "the deleted agent stays mapped"
            assert skipped in after

            # Without the check the skipped agent leaves the map (and would be tombstoned).
            assert skipped not in await _refresh(kafka, settings, shifted, None)
        finally:
            await rest.aclose()


async def test_still_active_answers_by_id_in_chunks(kafka: KafkaBroker) -> None:
    """Deleted and unknown ids are not active; more ids than one call holds are all asked."""
    async with sim_process(agents=150, events_per_sec=0, seed=3, paused=True) as sim:
        settings = bridge_settings(kafka, sim, shard_capacity=200)
        rest = genesys_rest(settings, settings.clients()[0])
        try:
            everyone = sorted(u.id for u in await rest.active_users())
            await sim.admin("DELETE", f"/sim/users/{everyone[-1]}")
            asked = [*everyone, "00000000-0000-0000-0000-000000000000"]
            assert await rest.still_active(asked) == set(everyone[:-1])
        finally:
            await rest.aclose()
