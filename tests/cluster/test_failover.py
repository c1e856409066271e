"""Broker failures on the secured three-node cluster, with worker processes streaming.

Each test ends with the same checks: every change the simulator made while
the workers streamed is on the event topics exactly once (no duplicate
eventId), each agent's changes in order, and ``audit`` agrees with Genesys.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SecureCluster
from tests.fleet.conftest import Fleet, dump_logs
from tests.worker.conftest import (
    Delivery,
    SimProcess,
    event_records,
    eventually_async,
    per_user_ordered,
    run_audit,
)

from .conftest import (
    EventTail,
    cluster_settings,
    grant,
    pick_bridge_id,
    prepare_topics,
    topics_of,
    txn_coordinator,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

AGENTS = 40
#: The module's simulator (the sim_base_url fixture of tests/cluster/conftest.py).
SIM_AGENTS = AGENTS
SIM_EVENTS_PER_SEC = 40
#: Two shards over two workers.
SHARD_CAPACITY = 20
#: How long the killed broker stays down.
OUTAGE_S = 20.0
#: Below the outage: the in-flight transactions outlive their timeout.
TXN_TIMEOUT_MS = 10_000
#: A broker failure must not stop the flow for longer than this.
MAX_GAP_S = 30.0


@pytest.fixture
def all_nodes_up(kafka_cluster: SecureCluster) -> Iterator[SecureCluster]:
    """Whatever a test did, every node runs again afterwards."""
    yield kafka_cluster
    for node in kafka_cluster.nodes():
        kafka_cluster.start(node)


async def check_everything_arrived(
    cluster: SecureCluster, sim: SimProcess, settings: Any, since: int
) -> None:
    """Pause Genesys; every change since ``since`` arrives once, in order; the audit agrees."""
    await sim.pause()
    try:
        delivery: Delivery | None = None
        records: list[dict[str, Any]] = []

        async def all_arrived() -> bool:
            nonlocal delivery, records
            log = [e for e in await sim.events() if e["seq"] > since]
            records = event_records(cluster, settings)  # type: ignore[arg-type]
            delivery = Delivery.compare(log, records)
            return bool(log) and not delivery.missing

        await eventually_async(all_arrived, 60, "every change on the event topics")
        assert delivery is not None
        assert not delivery.duplicated, f"{len(delivery.duplicated)} duplicated eventIds"
        assert per_user_ordered(records)
        mismatches, lines = await run_audit(settings)
        assert mismatches == 0, lines
    finally:
        await sim.admin("POST", "/sim/generator", paused=False)


async def last_seq(sim: SimProcess) -> int:
    events = await sim.events()
    return int(events[-1]["seq"]) if events else 0


async def test_sigkill_of_the_leader_and_transaction_coordinator_loses_nothing(
    all_nodes_up: SecureCluster, sim: SimProcess, tmp_path: Path
) -> None:
    """SIGKILL the broker leading the state topic and shard 0's transactions; back after 20 s.

    The outage outlasts the shard producers' transaction timeout (lowered to
    10 s), so this is also the broker-down-longer-than-transaction.timeout.ms case.
    """
    cluster = all_nodes_up
    settings = cluster_settings(
        cluster,
        sim,
        topic_partitions=1,
        shard_capacity=SHARD_CAPACITY,
        kafka_transaction_timeout_ms=TXN_TIMEOUT_MS,
    )
    victim = prepare_topics(cluster, settings)
    settings = pick_bridge_id(cluster, settings, victim)
    grant(cluster, settings)
    assert txn_coordinator(cluster, f"{settings.id}-shard-0") == victim
    fleet = Fleet(settings, tmp_path)
    tail = EventTail(cluster, [settings.topic_presence, settings.topic_routing_status])
    try:
        fleet.start()
        fleet.start()
        await fleet.wait_settled(2, timeout_s=90)
        since = await last_seq(sim)
        await asyncio.sleep(2)
        killed_at = time.monotonic()
        cluster.kill(victim)
        first_after = await asyncio.to_thread(tail.first_after, killed_at, MAX_GAP_S)
        assert first_after is not None, (
            f"nothing committed within {MAX_GAP_S} s of the kill\n{dump_logs(fleet)}"
        )
        print(
            f"\nSIGKILL of leader+coordinator node {victim}: first committed record after {first_after:.2f} s"
        )
        await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - killed_at)))
        await asyncio.to_thread(cluster.start, victim)
        await asyncio.to_thread(cluster.wait_in_sync, topics_of(settings))
        assert all(w.alive() for w in fleet.workers), dump_logs(fleet)
        await check_everything_arrived(cluster, sim, settings, since)
    finally:
        tail.close()
        fleet.stop_all()


async def test_a_rolling_restart_of_every_broker_loses_nothing(
    all_nodes_up: SecureCluster, sim: SimProcess, tmp_path: Path
) -> None:
    """Each broker in turn stops cleanly (SIGTERM) and comes back while two workers stream."""
    cluster = all_nodes_up
    settings = cluster_settings(cluster, sim, topic_partitions=3, shard_capacity=SHARD_CAPACITY)
    grant(cluster, settings)
    fleet = Fleet(settings, tmp_path)
    try:
        fleet.start()
        fleet.start()
        await fleet.wait_settled(2, timeout_s=90)
        since = await last_seq(sim)
        for node in cluster.nodes():
            await asyncio.to_thread(cluster.stop, node)
            await asyncio.to_thread(cluster.start, node)
            await asyncio.to_thread(cluster.wait_in_sync, topics_of(settings))
        assert all(w.alive() for w in fleet.workers), dump_logs(fleet)
        await check_everything_arrived(cluster, sim, settings, since)
    finally:
        fleet.stop_all()
