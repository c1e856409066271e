"""Backfill end to end (real broker, simulator process): every transition of a gap reaches Kafka.

One simulator and one worker serve every test of the module (in file order):
a drop of every socket with the analytics delay at its default, then the same
with the history refused until the fault is lifted. Reconnects are slowed by
an injected socket connect so each gap lasts long enough to hold changes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio

from bridge import metrics
from bridge.genesys.socket import NotificationSocket, WebSocketConnection, aiohttp_connect
from bridge.settings import Settings
from tests.conftest import KafkaBroker
from tests.worker.conftest import (
    Delivery,
    RunningWorker,
    SimProcess,
    bridge_settings,
    event_records,
    expected_event_id,
    per_user_ordered,
    read_topic,
    running_worker,
    sim_process,
)

pytestmark = [pytest.mark.kafka, pytest.mark.asyncio(loop_scope="module")]

AGENTS = 200
EVENTS_PER_SEC = 100
CAPACITY = 100
#: Each reconnect waits this long before connecting: the gap of every drop.
GAP_S = 1.0
#: Clock reads of two processes and the socket's own latency.
SLACK = timedelta(milliseconds=100)
RECOVERY_TIMEOUT_S = 40.0
POLL_S = 0.5


class SlowConnects:
    """A socket factory whose connects wait :attr:`delay_s` first: a gap of a known length."""

    def __init__(self) -> None:
        self.delay_s = 0.0

    def __call__(self) -> NotificationSocket:
        return NotificationSocket(connect=self._connect)

    async def _connect(self, uri: str) -> WebSocketConnection:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return await aiohttp_connect(uri)


@dataclass
class Env:
    kafka: KafkaBroker
    sim: SimProcess
    running: RunningWorker
    settings: Settings
    slow: SlowConnects


@dataclass
class Run:
    """What one fault of the module left in Kafka."""

    log: list[dict[str, Any]]
    records: list[dict[str, Any]]
    gaps: list[dict[str, Any]]
    dropped_at: datetime
    members: dict[int, set[str]] = field(default_factory=dict)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(kafka: KafkaBroker) -> AsyncIterator[Env]:
    options = {
        "agents": AGENTS,
        "events_per_sec": EVENTS_PER_SEC,
        "seed": 15,
        "heartbeat_s": 1,
        "paused": True,
    }
    async with sim_process(**options) as sim:
        settings = bridge_settings(kafka, sim, shard_capacity=CAPACITY)
        slow = SlowConnects()
        async with running_worker(settings, socket_factory=slow) as running:
            await running.wait_ready()
            yield Env(kafka, sim, running, settings, slow)
            assert await running.stop() == 0


def _gaps(env: Env) -> list[dict[str, Any]]:
    return [value for _key, value, _headers in read_topic(env.kafka, env.settings.topic_gaps)]


async def _wait_gaps(env: Env, after: datetime, **wanted: Any) -> list[dict[str, Any]]:
    """One gap record per shard, from after ``after``, with the ``wanted`` fields."""
    shards = {s.shard_id for s in env.running.worker.shards}
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    while True:
        found = {
            g["shard"]: g
            for g in await asyncio.to_thread(_gaps, env)
            if _time(g["to"]) > after and all(g[k] == v for k, v in wanted.items())
        }
        if set(found) >= shards:
            return [found[s] for s in sorted(shards)]
        assert time.monotonic() < deadline, f"no gap record {wanted} for every shard: {found}"
        assert not env.running.task.done(), f"worker ended: {env.running.task.exception()!r}"
        await asyncio.sleep(POLL_S)


async def _drop(env: Env) -> tuple[int, datetime]:
    """Drop every socket while agents change; reconnects wait GAP_S. Returns (log seq, drop time)."""
    start_seq = (await env.sim.stats())["lastSeq"]
    await env.sim.admin("POST", "/sim/generator", paused=False)
    await asyncio.sleep(1.5)
    env.slow.delay_s = GAP_S
    dropped_at = datetime.now(UTC)
    await env.sim.admin("POST", "/sim/faults/drop")
    return start_seq, dropped_at


async def _collect(env: Env, start_seq: int, dropped_at: datetime, gaps: list[dict[str, Any]]) -> Run:
    """Stop the changes and read until every change of the log is in Kafka (or time out)."""
    await asyncio.sleep(1.0)  # post-gap changes on the stream
    await env.sim.pause()
    log = [e for e in await env.sim.events() if e["seq"] > start_seq]
    wanted = {expected_event_id(e) for e in log}
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    while True:
        records = await asyncio.to_thread(event_records, env.kafka, env.settings)
        if wanted <= {r["eventId"] for r in records} or time.monotonic() > deadline:
            break
        await asyncio.sleep(POLL_S)
    members = {s.shard_id: set(s.users) for s in env.running.worker.shards}
    return Run(log, records, gaps, dropped_at, members)


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _in_gap(run: Run, gap: dict[str, Any]) -> list[dict[str, Any]]:
    """The log's changes of the gap's shard that no socket could deliver (drop to reconnect)."""
    users = run.members[gap["shard"]]
    start, end = run.dropped_at + SLACK, _time(gap["to"]) - SLACK
    return [e for e in run.log if e["userId"] in users and start < _time(e["changedAt"]) < end]


def _assert_delivered(run: Run) -> None:
    delivery = Delivery.compare(run.log, run.records)
    assert delivery.missing == [], f"{len(delivery.missing)} of {len(run.log)} changes missing"
    assert delivery.duplicated == [], f"{len(delivery.duplicated)} eventIds written twice"
    assert per_user_ordered([r for r in run.records if not r.get("late")]), (
        "a user's records went back in time"
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def dropped(env: Env) -> Run:
    start_seq, dropped_at = await _drop(env)
    gaps = await _wait_gaps(env, dropped_at, recovered=True)
    env.slow.delay_s = 0.0
    return await _collect(env, start_seq, dropped_at, gaps)


async def test_a_dropped_socket_loses_no_transition(dropped: Run) -> None:
    """Every change the simulator logged is in Kafka once, in order; those of the gap as backfilled,
    and each shard's gap record counts them and says recovered."""
    _assert_delivered(dropped)
    by_id = {r["eventId"]: r for r in dropped.records}
    in_gap = 0
    for gap in dropped.gaps:
        users = dropped.members[gap["shard"]]
        assert (gap["cause"], gap["recovered"], gap["fallback"]) == ("reconnect", True, None)
        assert _time(gap["from"]) <= dropped.dropped_at < _time(gap["to"])
        assert gap["agents"] == len(users)
        changes = _in_gap(dropped, gap)
        in_gap += len(changes)
        origins = {by_id[expected_event_id(e)]["origin"] for e in changes}
        assert origins <= {"backfill"}, origins
        # Read after the drop (a shard that started after the others backfilled its start too).
        mine = [
            r for r in dropped.records if r["userId"] in users and _time(r["observedAt"]) > dropped.dropped_at
        ]
        assert gap["backfilled"] == sum(r["origin"] == "backfill" for r in mine)
        assert gap["late"] == sum(bool(r.get("late")) for r in mine)
    print(f"{in_gap} changes inside the gaps, {len(dropped.log)} in all; gaps: {dropped.gaps}")
    assert in_gap > 0, "no change fell into the gaps"


async def test_a_post_gap_change_waits_for_its_agents_backfill(dropped: Run) -> None:
    """A stream change received before its agent's history was read is written after the history's."""
    position = {r["eventId"]: i for i, r in enumerate(dropped.records)}
    ends = {g["shard"]: _time(g["to"]) for g in dropped.gaps}
    shard_of = {u: s for s, users in dropped.members.items() for u in users}
    held = 0
    for stream in dropped.records:
        if stream["origin"] != "stream" or _time(stream["changedAt"]) < ends[shard_of[stream["userId"]]]:
            continue
        for backfilled in dropped.records:
            same = (backfilled["userId"], backfilled["schema"]) == (stream["userId"], stream["schema"])
            in_time = same and backfilled["origin"] == "backfill" and not backfilled.get("late")
            if in_time and _time(backfilled["observedAt"]) > _time(stream["observedAt"]):
                held += 1
                assert position[backfilled["eventId"]] < position[stream["eventId"]]
    print(f"{held} post-gap stream records waited for a backfilled record of their agent")
    assert held > 0, "no post-gap change arrived before its agent's history was read"


def _counter(metric: Any, **labels: str) -> float:
    return float(metric.labels(**labels)._value.get())


async def test_forbidden_history_falls_back_to_reconciliation_then_recovers_late(env: Env) -> None:
    """403 on the history: the final states arrive by reconciliation, the gap is recorded unrecovered
    (fallback forbidden) and counted; once allowed, the gap's transitions are written late and the
    same gap is recorded again, recovered."""
    before = _counter(metrics.BACKFILL_FALLBACKS, reason="forbidden")
    await env.sim.admin("POST", "/sim/faults/analytics", forbidden=True)
    start_seq, dropped_at = await _drop(env)
    first = await _wait_gaps(env, dropped_at, recovered=False, fallback="forbidden")
    env.slow.delay_s = 0.0
    assert _counter(metrics.BACKFILL_FALLBACKS, reason="forbidden") == before + len(first)
    assert all(g["late"] == 0 and g["backfilled"] == 0 for g in first)
    await asyncio.sleep(1.0)
    await env.sim.pause()
    log = [e for e in await env.sim.events() if e["seq"] > start_seq]
    final = {(e["userId"], e["kind"]): expected_event_id(e) for e in log}
    records = await asyncio.to_thread(event_records, env.kafka, env.settings)
    assert set(final.values()) <= {r["eventId"] for r in records}, "a final state is missing"

    await env.sim.admin("POST", "/sim/faults/analytics", forbidden=False)
    second = await _wait_gaps(env, dropped_at, recovered=True)
    assert [g["gapId"] for g in second] == [g["gapId"] for g in first]
    run = await _collect(env, start_seq, dropped_at, second)
    _assert_delivered(run)
    late = [r for r in run.records if r.get("late")]
    print(f"{len(late)} late records; gaps: {second}")
    assert late and all(r["origin"] == "backfill" for r in late)
    for gap in second:
        users = run.members[gap["shard"]]
        gap_late = [r for r in late if r["userId"] in users and _time(r["changedAt"]) <= _time(gap["to"])]
        gap_late = [r for r in gap_late if _time(r["changedAt"]) > _time(gap["from"])]
        assert gap["late"] == len(gap_late) == gap["backfilled"] > 0


async def test_a_change_delivered_after_a_newer_one_is_written_late(env: Env) -> None:
    """An out-of-order frame (sent after the agent's next change): the older change is not dropped
    but written once, late, with the stream's id; nothing is missing or duplicated."""
    before = float(metrics.STALE_WRITTEN_LATE._value.get())
    user = sorted(env.running.worker.shards[0].users)[0]
    start_seq = (await env.sim.stats())["lastSeq"]
    path = f"/sim/users/{user}/routing-status"
    await env.sim.admin("PUT", path, status="COMMUNICATING")
    await env.sim.admin("POST", "/sim/faults/frames", kind="out-of-order", count=1)
    await asyncio.sleep(0.05)
    await env.sim.admin("PUT", path, status="NOT_RESPONDING")
    await asyncio.sleep(0.05)
    await env.sim.admin("PUT", path, status="IDLE")
    run = await _collect(env, start_seq, datetime.now(UTC), [])
    _assert_delivered(run)
    assert [e["value"] for e in run.log] == ["COMMUNICATING", "NOT_RESPONDING", "IDLE"]
    late = [r for r in run.records if r.get("late") and r["userId"] == user]
    assert [(r["status"], r["origin"]) for r in late] == [("NOT_RESPONDING", "stream")]
    assert float(metrics.STALE_WRITTEN_LATE._value.get()) == before + 1


#: Shorter than the watchdog's detection of a silent socket (here ping after 1 s, pong timeout 1.5 s).
SHORT_STALL_S = 2.0


async def test_a_stall_shorter_than_the_watchdog_loses_no_transition(env: Env) -> None:
    """A stall that ends (heartbeats resume) before the pong timeout: the ping sent during it is never
    answered, so the shard reconnects anyway and backfills from the last frame before the stall."""
    assert env.settings.ping_interval_s + env.settings.pong_timeout_s > SHORT_STALL_S
    start_seq = (await env.sim.stats())["lastSeq"]
    await env.sim.admin("POST", "/sim/generator", paused=False)
    await asyncio.sleep(1.0)
    stalled_at = datetime.now(UTC)
    await env.sim.admin("POST", "/sim/faults/stall", seconds=SHORT_STALL_S)
    gaps = await _wait_gaps(env, stalled_at, recovered=True)
    run = await _collect(env, start_seq, stalled_at, gaps)
    _assert_delivered(run)
    for gap in gaps:
        assert gap["cause"] == "reconnect"
        assert _time(gap["from"]) <= stalled_at, "the gap must reach back to before the stall"
        assert _time(gap["to"]) > stalled_at + timedelta(seconds=SHORT_STALL_S), "reconnected after it"
    stalled = [e for e in run.log if stalled_at + SLACK < _time(e["changedAt"]) < _time(gaps[0]["to"])]
    assert stalled, "no change fell into the stall"
