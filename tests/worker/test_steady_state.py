"""Steady state at the issue's scale: 2,000 agents, 3 shards, 200 changes/s for 60 s."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import KafkaBroker
from tests.worker.conftest import RunningWorker, SimProcess
from tests.worker.scenario import run_scenario

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

STREAM_S = 60


async def test_every_change_exactly_once_in_per_user_order(kafka: KafkaBroker) -> None:
    """Every change of the simulator's log appears exactly once (by eventId), in per-user order."""

    async def stream(_sim: SimProcess, _running: RunningWorker) -> None:
        await asyncio.sleep(STREAM_S)

    outcome = await run_scenario(
        kafka,
        stream,
        agents=2000,
        events_per_sec=200,
        capacity=700,
        before_s=0,
        after_s=1,
        recovered=lambda running, _after: running.worker.readiness()[0],
    )
    shards = outcome.shards
    assert len(shards) == 3
    assert all(s.stats.connects == 1 for s in shards), "no reconnect in steady state"
    assert len(outcome.log) >= 0.9 * 200 * STREAM_S
    assert len({r["eventId"] for r in outcome.records}) >= len(outcome.log)
