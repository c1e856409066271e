"""The fleet end to end: worker processes, the simulator process and the real broker."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import KafkaBroker
from tests.fleet.conftest import (
    SIM_OPTIONS,
    Fleet,
    dump_logs,
    fleet_of,
    fleet_settings,
    shard_map,
    subscriptions,
)
from tests.worker.conftest import (
    Delivery,
    event_records,
    eventually_async,
    read_topic,
    run_audit,
    sim_process,
)

pytestmark = pytest.mark.kafka


async def _settle_delivery(kafka: KafkaBroker, settings: Any, log: list[dict[str, Any]]) -> Delivery:
    deadline = time.monotonic() + 30
    while True:
        records = await asyncio.to_thread(event_records, kafka, settings)
        delivery = Delivery.compare(log, records)
        if not delivery.missing or time.monotonic() > deadline:
            return delivery
        await asyncio.sleep(1)


def _duplicates(records: list[dict[str, Any]]) -> list[str]:
    return [eid for eid, n in Counter(r["eventId"] for r in records).items() if n > 1]


async def test_spread_then_kill_a_worker(kafka: KafkaBroker, tmp_path: Path) -> None:
    """5,000 agents spread over 3 workers on one channel each; a SIGKILLed worker's shards resume."""
    async with sim_process(agents=5000, events_per_sec=100, paused=True, **SIM_OPTIONS) as sim:
        settings = fleet_settings(kafka, sim, shard_capacity=1000)
        async with fleet_of(settings, tmp_path, 3) as fleet:
            try:
                views = await fleet.wait_settled(5, timeout_s=120)
                counts = sorted(len(v["partitions"]) for v in views.values())
                assert counts == [1, 2, 2], views
                subs = subscriptions(await sim.stats())
                assert len(subs) == 5000 and set(subs.values()) == {1}
                assert [len(r.users) for r in shard_map(kafka, settings).values()] == [1000] * 5

                start_seq = (await sim.stats())["lastSeq"]
                await sim.admin("POST", "/sim/generator", paused=False)
                await asyncio.sleep(3)
                victim = max(fleet.live(), key=lambda w: len(views[w.name]["partitions"]))
                victim.kill()
                await asyncio.sleep(2)
                await fleet.wait_settled(5, timeout_s=60)
                await asyncio.sleep(2)
                await sim.pause()
                log = [e for e in await sim.events() if e["seq"] > start_seq]
                delivery = await _settle_delivery(kafka, settings, log)
                records = await asyncio.to_thread(event_records, kafka, settings)
                assert _duplicates(records) == []
                # Changes while the victim's channels were down come back by reconciliation.
                mismatches, lines = await run_audit(settings)
                assert mismatches == 0, lines
                assert len(delivery.produced) > 0
            except AssertionError:
                print(dump_logs(fleet))
                raise


async def test_zombie_is_fenced_and_rejoins(kafka: KafkaBroker, tmp_path: Path) -> None:
    """A worker frozen past its session loses its shards, writes nothing visible, closes them, rejoins."""
    async with sim_process(agents=200, events_per_sec=60, **SIM_OPTIONS) as sim:
        settings = fleet_settings(kafka, sim, shard_capacity=50)
        async with fleet_of(settings, tmp_path, 2) as fleet:
            try:
                views = await fleet.wait_settled(4)
                zombie = next(w for w in fleet.live() if not views[w.name]["coordinator"])
                other = next(w for w in fleet.live() if w is not zombie)
                channels = {s["channel"] for s in views[zombie.name]["shards"].values() if s.get("channel")}
                assert channels
                zombie.signal(signal.SIGSTOP)
                await fleet.wait_settled(4, workers=[other], timeout_s=30)
                resumed_at = datetime.now(UTC)
                zombie.signal(signal.SIGCONT)

                async def zombie_rejoined() -> bool:
                    v = await fleet.views()
                    owned = sorted(p for body in v.values() for p in body["partitions"])
                    return (
                        len(v) == 2
                        and all(b["ready"] for b in v.values())
                        and owned == [0, 1, 2, 3]
                        and bool(v[zombie.name]["partitions"])
                    )

                await eventually_async(zombie_rejoined, 45, "the zombie rejoins as a normal member")
                assert await zombie.metric("bridge_fenced_total") >= 1

                async def old_channels_closed() -> bool:
                    stats = await sim.stats()
                    return not [c for c in stats["channels"] if c["id"] in channels and c["connected"]]

                # Closing follows fencing (the shard waits up to 2 s for its tasks), not the rejoin.
                await eventually_async(old_channels_closed, 10, "the zombie closes its old channels")
                await sim.pause()
                await asyncio.sleep(1)
                for topic in (settings.topic_presence, settings.topic_routing_status):
                    for _key, value, _headers in await asyncio.to_thread(read_topic, kafka, topic):
                        if value["channelId"] in channels:
                            observed = datetime.fromisoformat(value["observedAt"].replace("Z", "+00:00"))
                            assert observed < resumed_at, value
                mismatches, lines = await run_audit(settings)
                assert mismatches == 0, lines
            except AssertionError:
                print(dump_logs(fleet))
                raise


async def _connects(fleet: Fleet, reason: str) -> float:
    total = 0.0
    for w in fleet.live():
        total += await w.metric(f'bridge_channel_connects_total{{reason="{reason}"}}')
    return total


async def test_roster_change_growth_budget_and_coordinator_loss(kafka: KafkaBroker, tmp_path: Path) -> None:
    """Roster changes move the map in place, grow partitions, survive the coordinator, report overflow."""
    async with sim_process(agents=600, events_per_sec=30, max_channels_per_client=5, **SIM_OPTIONS) as sim:
        settings = fleet_settings(kafka, sim, shard_capacity=250, genesys_max_channels_per_client=5)
        async with fleet_of(settings, tmp_path, 3) as fleet:
            try:
                await fleet.wait_settled(3)
                before = await sim.stats()
                old_channels = {c["id"] for c in before["channels"] if c["connected"]}
                reconnects = await _connects(fleet, "reconnect")
                users = sorted(subscriptions(before))
                removed = users[:100]
                added = (await sim.admin("POST", "/sim/users", count=300))["ids"]
                for uid in removed:
                    await sim.admin("DELETE", f"/sim/users/{uid}")

                def map_has(users_in: set[str], users_out: set[str], shards: int) -> Any:
                    async def check() -> bool:
                        m = await asyncio.to_thread(shard_map, kafka, settings)
                        members = {u for r in m.values() for u in r.users}
                        return len(m) == shards and users_in <= members and not (users_out & members)

                    return check

                await eventually_async(map_has(set(added), set(removed), 4), 30, "the map follows the roster")
                await fleet.wait_settled(4)
                stats = await sim.stats()
                subs = subscriptions(stats)
                assert set(subs) == (set(users) - set(removed)) | set(added)
                assert set(subs.values()) == {1}
                assert old_channels <= {c["id"] for c in stats["channels"] if c["connected"]}
                assert await _connects(fleet, "reconnect") == reconnects
                state = {
                    k: v
                    for k, v, _h in await asyncio.to_thread(read_topic, kafka, settings.topic_agent_state)
                }
                assert all(state.get(uid, "missing") is None for uid in removed)
                newcomer = added[0]
                await sim.admin("PUT", f"/sim/users/{newcomer}/presence", systemPresence="MEAL")

                async def newcomer_flows() -> bool:
                    recs = await asyncio.to_thread(read_topic, kafka, settings.topic_presence)
                    return any(
                        v["userId"] == newcomer and v["systemPresence"] == "MEAL" for _k, v, _h in recs
                    )

                await eventually_async(newcomer_flows, 20, "a new agent's change reaches Kafka")

                coordinator = await fleet.owner_of(0)
                assert coordinator is not None
                coordinator.kill()
                more = (await sim.admin("POST", "/sim/users", count=150))["ids"]
                await eventually_async(map_has(set(more), set(), 4), 45, "the next coordinator refreshes")
                await fleet.wait_settled(4)

                overflow = (await sim.admin("POST", "/sim/users", count=100))["ids"]
                assert len(overflow) == 100
                new_coordinator = await fleet.owner_of(0)
                assert new_coordinator is not None

                async def reported() -> bool:
                    return await new_coordinator.metric("bridge_roster_unassigned_users") == 50

                await eventually_async(reported, 30, "unassigned agents are counted")
                assert "do not fit the channel budget" in new_coordinator.log()
                assert len(await asyncio.to_thread(shard_map, kafka, settings)) == 4
            except AssertionError:
                print(dump_logs(fleet))
                raise


async def test_rolling_restart(kafka: KafkaBroker, tmp_path: Path) -> None:
    """Every worker in turn gets SIGTERM, exits 0 within 10 s and is replaced; audit passes."""
    async with sim_process(agents=300, events_per_sec=40, **SIM_OPTIONS) as sim:
        settings = fleet_settings(kafka, sim, shard_capacity=100)
        async with fleet_of(settings, tmp_path, 3) as fleet:
            try:
                await fleet.wait_settled(3)
                for old in list(fleet.live()):
                    started = time.monotonic()
                    assert await old.terminate() == 0
                    assert time.monotonic() - started < 10
                    fleet.start()
                    await fleet.wait_settled(3)
                await sim.pause()
                await asyncio.sleep(2)
                mismatches, lines = await run_audit(settings)
                assert mismatches == 0, lines
                records = await asyncio.to_thread(event_records, kafka, settings)
                assert _duplicates(records) == []
            except AssertionError:
                print(dump_logs(fleet))
                raise
