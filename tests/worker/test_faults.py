"""One test per fault: the worker recovers, loses nothing it was sent, duplicates nothing."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import pytest

from bridge import metrics
from bridge.settings import Settings
from tests.conftest import KafkaBroker
from tests.worker.conftest import RunningWorker, SimProcess, expected_event_id, read_topic
from tests.worker.scenario import any_reconnected_after, run_scenario

pytestmark = pytest.mark.kafka


def _counter(metric: Any, **labels: str) -> float:
    return float(metric.labels(**labels)._value.get()) if labels else float(metric._value.get())


async def test_abrupt_socket_drop(kafka: KafkaBroker) -> None:
    """A TCP drop without a close frame: reconnect, reconcile, backfill: no change is absent."""

    async def inject(sim: SimProcess, _running: RunningWorker) -> None:
        await sim.admin("POST", "/sim/faults/drop")

    await run_scenario(kafka, inject, recovered=any_reconnected_after)


#: The liveness settings at their defaults (the harness speeds them up otherwise).
DEFAULT_LIVENESS = {
    name: Settings.model_fields[name].default
    for name in ("heartbeat_interval_s", "heartbeat_timeout_factor", "ping_interval_s", "pong_timeout_s")
}
#: A silent socket is given up within 10 s by default; the reconnect itself
#: (backoff of at most 0.5 s, handshake, subscription) comes on top.
STALL_NOTICED_WITHIN_S = 10.0
RECONNECT_SLACK_S = 2.0


async def test_stalled_socket_is_noticed_within_ten_seconds_with_default_settings(kafka: KafkaBroker) -> None:
    """A 15 s stall (socket open, nothing sent, Genesys's 30 s heartbeat) is noticed by our pings with
    the default settings: every shard reconnects within 10 s, reconciles and backfills the stall:
    nothing is lost and Kafka ends right."""
    stall_s = 15.0
    started: list[float] = []

    async def inject(sim: SimProcess, _running: RunningWorker) -> None:
        started.append(time.monotonic())
        await sim.admin("POST", "/sim/faults/stall", seconds=stall_s)

    outcome = await run_scenario(
        kafka,
        inject,
        sim_options={"heartbeat_s": 30},
        settings={
            **DEFAULT_LIVENESS,
            "backoff_initial_s": Settings.model_fields["backoff_initial_s"].default,
        },
        recovered=_all_reconnected_after,
    )
    waits = [
        s.stats.last_connected - started[0] for s in outcome.shards if s.stats.last_connected is not None
    ]
    print(f"stall start → reconnect per shard: {', '.join(f'{w:.2f} s' for w in sorted(waits))}")
    assert len(waits) == len(outcome.shards)
    assert all(w <= STALL_NOTICED_WITHIN_S + RECONNECT_SLACK_S for w in waits), waits
    assert all(w < stall_s for w in waits), "noticed only when the stall ended by itself"


def _all_reconnected_after(running: RunningWorker, after: float) -> bool:
    shards = running.worker.shards
    return (
        bool(shards)
        and all(
            s.stats.last_connected is not None
            and s.stats.last_connected > after
            and s.stats.last_reconciled is not None
            and s.stats.last_reconciled > s.stats.last_connected
            for s in shards
        )
        and running.worker.readiness()[0]
    )


async def test_maintenance_handover_loses_nothing(kafka: KafkaBroker) -> None:
    """socket_closing: the new socket opens before the old one goes; every change is delivered."""
    before = _counter(metrics.CHANNEL_CONNECTS, reason="maintenance")

    async def inject(sim: SimProcess, _running: RunningWorker) -> None:
        await sim.admin("POST", "/sim/faults/maintenance", graceSeconds=2)

    await run_scenario(kafka, inject, recovered=_after_maintenance(before))


def _after_maintenance(before: float) -> Any:
    def check(running: RunningWorker, after: float) -> bool:
        shards = running.worker.shards
        return (
            _counter(metrics.CHANNEL_CONNECTS, reason="maintenance") >= before + len(shards)
            and running.worker.readiness()[0]
            and all(s.stats.last_reconciled is not None and s.stats.last_reconciled > after for s in shards)
        )

    return check


async def test_channel_extended_before_expiry(kafka: KafkaBroker) -> None:
    """Short-lived channels are extended by re-subscribing and never close: nothing lost."""

    async def inject(_sim: SimProcess, _running: RunningWorker) -> None:
        await asyncio.sleep(8)  # several extensions of a 6 s channel

    outcome = await run_scenario(
        kafka,
        inject,
        sim_options={"channel_ttl_s": 6},
        recovered=lambda running, _after: running.worker.readiness()[0],
    )
    assert all(s.stats.connects == 1 for s in outcome.shards), "no reconnect was needed"


async def test_channel_closing_regardless_is_rotated_make_before_break(kafka: KafkaBroker) -> None:
    """A server that closes at expiry despite re-subscription: rotation to a new channel loses nothing."""
    before = _counter(metrics.CHANNEL_ROTATIONS, reason="expiring")

    def rotated(running: RunningWorker, after: float) -> bool:
        shards = running.worker.shards
        return (
            _counter(metrics.CHANNEL_ROTATIONS, reason="expiring") >= before + len(shards)
            and running.worker.readiness()[0]
            and all(s.stats.last_reconciled is not None and s.stats.last_reconciled > after for s in shards)
        )

    async def inject(_sim: SimProcess, _running: RunningWorker) -> None:
        return None

    await run_scenario(
        kafka,
        inject,
        sim_options={"channel_ttl_s": 6, "no_extend_on_subscribe": True},
        recovered=rotated,
    )


async def test_eviction_by_a_21st_channel(kafka: KafkaBroker) -> None:
    """Another app's channels evict ours (LRU): a new channel is made and the gap backfilled."""
    sockets: list[Any] = []

    async def inject(sim: SimProcess, _running: RunningWorker) -> None:
        from websockets.asyncio.client import connect

        async with httpx.AsyncClient(base_url=sim.base_url) as http:
            token = (
                await http.post(
                    "/oauth/token",
                    data={"grant_type": "client_credentials"},
                    auth=("sim-client", "sim-secret"),
                )
            ).json()["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            for _ in range(20):
                channel = (await http.post("/api/v2/notifications/channels", headers=headers)).json()
                sockets.append(await connect(channel["connectUri"]))

    try:
        await run_scenario(kafka, inject, capacity=300, recovered=any_reconnected_after)
    finally:
        for ws in sockets:
            await ws.close()


async def test_revoked_tokens_are_refreshed(kafka: KafkaBroker) -> None:
    """All tokens revoked, then a drop: the reconnect's REST calls get 401, refresh, and recover."""

    async def inject(sim: SimProcess, _running: RunningWorker) -> None:
        await sim.admin("POST", "/sim/faults/revoke-tokens")
        await sim.admin("POST", "/sim/faults/drop")

    outcome = await run_scenario(kafka, inject, recovered=any_reconnected_after)
    statuses = [s for route in outcome.sim_stats["requests"].values() for s in route]
    assert "401" in statuses, "the revoked token was used and refused"


async def test_429_storm_is_waited_out(kafka: KafkaBroker) -> None:
    """A storm of 429s on the REST API during recovery: Retry-After honoured, nothing lost."""
    limited = _counter(metrics.GENESYS_RATE_LIMITED)

    async def inject(sim: SimProcess, _running: RunningWorker) -> None:
        await sim.admin("POST", "/sim/faults/http", status=429, count=8, pathPrefix="/api/v2/")
        await sim.admin("POST", "/sim/faults/drop")

    await run_scenario(kafka, inject, recovered=any_reconnected_after)
    assert _counter(metrics.GENESYS_RATE_LIMITED) >= limited + 8


async def test_5xx_on_rest_is_retried(kafka: KafkaBroker) -> None:
    """503s on the REST API during recovery are retried with backoff."""

    async def inject(sim: SimProcess, _running: RunningWorker) -> None:
        await sim.admin("POST", "/sim/faults/http", status=503, count=6, pathPrefix="/api/v2/")
        await sim.admin("POST", "/sim/faults/drop")

    await run_scenario(kafka, inject, recovered=any_reconnected_after)


async def test_bad_frames_go_to_the_dlq_or_are_dropped(kafka: KafkaBroker) -> None:
    """Malformed frames → DLQ with a reason; duplicates → dropped and counted; a frame sent after a
    newer change of its agent → counted as stale and written late (``late: true``), not lost."""
    stale = _counter(metrics.STALE_EVENTS, kind="presence") + _counter(
        metrics.STALE_EVENTS, kind="routing_status"
    )

    late: set[int] = set()

    async def inject(sim: SimProcess, _running: RunningWorker) -> None:
        for kind in ("malformed", "duplicate"):
            await sim.admin("POST", "/sim/faults/frames", kind=kind, count=5)
        await asyncio.sleep(1)  # frame faults apply in turn: let the generator use these up
        users = sorted((await sim.admin("GET", "/sim/truth"))["users"])[:5]
        # Generator paused so that each out-of-order fault hits our change, not a generated one.
        await sim.pause()
        for user in users:
            # The first change is held back until after the second: it arrives stale.
            await sim.admin("POST", "/sim/faults/frames", kind="out-of-order", count=1)
            held = await sim.admin("PUT", f"/sim/users/{user}/routing-status", status="OFF_QUEUE")
            late.add(held["seq"])
            await sim.admin("PUT", f"/sim/users/{user}/routing-status", status="IDLE")
        await sim.admin("POST", "/sim/generator", paused=False)
        await asyncio.sleep(1)

    outcome = await run_scenario(
        kafka,
        inject,
        recovered=lambda running, _after: running.worker.readiness()[0],
        late_seqs=late,
    )
    dlq = read_topic(kafka, outcome.running.settings.topic_dlq)
    assert len(dlq) >= 5
    assert all(value["reason"] and value["frame"] for _key, value, _headers in dlq)
    after = _counter(metrics.STALE_EVENTS, kind="presence") + _counter(
        metrics.STALE_EVENTS, kind="routing_status"
    )
    assert after >= stale + 10  # 5 duplicates, 5 late frames
    held = {expected_event_id(e) for e in outcome.log if e["seq"] in late}
    written_late = {r["eventId"] for r in outcome.records if r.get("late")}
    assert held <= written_late


async def test_broker_outage_of_20_seconds(tmp_path: Any) -> None:
    """The Kafka broker stops for 20 s mid-stream: everything is committed once it returns."""
    from confluent_kafka.admin import AdminClient

    from tests.conftest import KafkaBroker as Broker
    from tests.conftest import localkafka

    data = tmp_path / "kafka"
    port = localkafka.free_port()
    broker = localkafka.start(data, port=port, quiet=True)
    own = Broker(
        bootstrap=broker.bootstrap, version="own", admin=AdminClient({"bootstrap.servers": broker.bootstrap})
    )

    async def inject(_sim: SimProcess, _running: RunningWorker) -> None:
        await asyncio.to_thread(localkafka.stop, data)
        await asyncio.sleep(20)
        await asyncio.to_thread(localkafka.start, data, port, None, 60.0, True)

    def drained(running: RunningWorker, _after: float) -> bool:
        return running.worker.readiness()[0] and all(
            s.describe()["pending"] == 0 for s in running.worker.shards
        )

    try:
        await run_scenario(own, inject, events_per_sec=50, recovered=drained)
    finally:
        localkafka.stop(data)


def _unique() -> str:
    return uuid.uuid4().hex[:6]
