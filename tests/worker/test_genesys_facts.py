"""The worker against Genesys behaviours the SDK documents: system messages, rejected topics, token scope."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from bridge import metrics
from tests.conftest import KafkaBroker
from tests.worker.conftest import (
    RunningWorker,
    SimProcess,
    bridge_settings,
    eventually,
    run_audit,
    running_worker,
    sim_process,
)
from tests.worker.scenario import run_scenario

pytestmark = pytest.mark.kafka

#: The promise: a channel that lost its subscriptions is replaced and reconciled within this.
RECOVERY_LIMIT_S = 5.0


def _rotations(reason: str) -> float:
    return float(metrics.CHANNEL_ROTATIONS.labels(reason=reason)._value.get())


def _rotated_and_reconciled(reason: str, before: float, took: list[float]) -> Any:
    def check(running: RunningWorker, after: float) -> bool:
        shards = running.worker.shards
        done = (
            _rotations(reason) >= before + len(shards)
            and running.worker.readiness()[0]
            and all(s.stats.last_reconciled is not None and s.stats.last_reconciled > after for s in shards)
        )
        if done and not took:
            took.append(time.monotonic() - after)
        return done

    return check


@pytest.mark.parametrize(
    ("topic_type", "sim_options"),
    [
        ("no_longer_subscribed", {}),
        ("token_revoked", {"revoke_ends_channels": True}),
    ],
)
async def test_lost_subscriptions_move_to_a_new_channel_within_5_s(
    kafka: KafkaBroker, topic_type: str, sim_options: dict[str, Any]
) -> None:
    """A system message that ends delivery: new channel, reconciliation, counted, within 5 s."""
    before = _rotations(topic_type)
    took: list[float] = []

    async def inject(sim: SimProcess, _running: RunningWorker) -> None:
        await sim.admin("POST", "/sim/faults/system", type=topic_type)

    outcome = await run_scenario(
        kafka,
        inject,
        sim_options=sim_options,
        recovered=_rotated_and_reconciled(topic_type, before, took),
    )
    assert took and took[0] < RECOVERY_LIMIT_S, f"recovered after {took} s"
    channels = outcome.sim_stats["channels"]
    subscribed = [c for c in channels if c["topics"]]
    assert len(subscribed) == len(outcome.shards), "one subscribed channel per shard, the old ones released"


async def test_rejected_agents_are_unobservable_not_subscribed(kafka: KafkaBroker) -> None:
    """Restricted agents: never counted subscribed; gauged, in readiness, audit mismatches unless allowed."""
    async with sim_process(agents=40, seed=5, heartbeat_s=1, paused=True) as sim:
        users = sorted((await sim.http.get("/sim/truth")).json()["users"])
        hidden = sorted(users[:2])
        for user in hidden:
            await sim.admin("POST", f"/sim/users/{user}/restrict", missingPermissions=["directory:user:view"])
        config = bridge_settings(kafka, sim, shard_capacity=100)
        async with running_worker(config) as running:
            await running.wait_ready()
            shard = running.worker.shards[0]
            assert sorted(shard.unobservable) == hidden
            details = shard.describe()
            assert details["subscribed"] == len(users) - 2 and details["unobservable"] == hidden
            ready, readiness = running.worker.readiness()
            assert ready and readiness["shards"][str(shard.shard_id)]["unobservable"] == hidden  # type: ignore[index]
            gauge = metrics.SUBSCRIPTION_REJECTED_TOPICS.labels(
                shard=str(shard.shard_id), reason="missing_permissions"
            )
            assert gauge._value.get() == 2
            # A newly added agent is counted by the POST reply, which lists the whole channel.
            added = (await sim.admin("POST", "/sim/users", count=1))["ids"]
            await shard.set_users([*shard.users, *added])
            assert shard.describe()["subscribed"] == len(users) - 1
            mismatches, lines = await run_audit(config)
            allowed, _ = await run_audit(config, allow_unobservable=True)
            assert allowed == 0
            assert mismatches == 2 and [
                line.split()[1] for line in lines if line.startswith("unobservable")
            ] == [f"{u}:" for u in hidden]
            assert await running.stop() == 0


async def test_channel_made_with_an_earlier_token_is_extended_not_rotated(kafka: KafkaBroker) -> None:
    """After a token refresh the channel is no longer listed by id; HEAD finds it, so no rotation."""
    async with sim_process(agents=20, seed=6, heartbeat_s=1, paused=True, channel_ttl_s=6) as sim:
        config = bridge_settings(kafka, sim, shard_capacity=100)
        async with running_worker(config) as running:
            await running.wait_ready()
            shard = running.worker.shards[0]
            channel = shard.channel_id
            await sim.admin("POST", "/sim/faults/revoke-tokens")  # the next REST call refreshes the token
            await asyncio.sleep(7)  # past the 6 s lifetime: at least one extension happened
            await eventually(lambda: running.worker.readiness()[0], 10, "ready")
            assert shard.channel_id == channel and shard.stats.connects == 1
            requests = (await sim.stats())["requests"]
            assert requests.get("HEAD /api/v2/notifications/channels/{channel_id}"), "HEAD decided"
            assert await running.stop() == 0
