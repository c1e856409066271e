"""One fault scenario, end to end: stream, inject a fault, recover, compare with the simulator.

The comparison is strict about what the bridge promises (README "Delivery promise"):

- no ``eventId`` appears twice in the event topics;
- per user and kind, records never go back in time;
- every change of the simulator's log is in Kafka, whatever the fault: Genesys
  never replays a gap, but the backfill reads what it lost from the analytics
  history (an out-of-order frame dropped by design is the only exception, and
  a newer change of its user and kind must be there);
- ``audit`` finds Kafka and the simulator in agreement.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tests.conftest import KafkaBroker
from tests.worker.conftest import (
    RunningWorker,
    SimProcess,
    bridge_settings,
    event_records,
    expected_event_id,
    per_user_ordered,
    run_audit,
    running_worker,
    sim_process,
)

#: The simulator's analytics delay in these scenarios (its default, as Genesys's, is 5 s): a gap's
#: history is still read after it and its held changes still wait, but each scenario settles 4 s
#: sooner. tests/worker/test_backfill.py and the chaos runs keep the default.
ANALYTICS_DELAY_S = 1.0

Inject = Callable[[SimProcess, RunningWorker], Awaitable[None]]


@dataclass
class Outcome:
    """What a scenario observed (for extra assertions in the test)."""

    log: list[dict[str, Any]]
    records: list[dict[str, Any]]
    missing: list[dict[str, Any]]
    running: RunningWorker
    sim_stats: dict[str, Any]
    window: tuple[datetime, datetime]
    shards: list[Any]


async def run_scenario(
    kafka: KafkaBroker,
    inject: Inject,
    *,
    agents: int = 300,
    events_per_sec: float = 100,
    capacity: int = 150,
    before_s: float = 2.0,
    after_s: float = 2.0,
    sim_options: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    recovered: Callable[[RunningWorker, float], bool] | None = None,
    seed: int = 11,
    late_seqs: set[int] | None = None,
) -> Outcome:
    """Run one scenario; assert the delivery promise; return what was seen."""
    options = {
        "agents": agents,
        "events_per_sec": events_per_sec,
        "seed": seed,
        "heartbeat_s": 1,
        "paused": True,
        "analytics_delay_s": ANALYTICS_DELAY_S,
    }
    options.update(sim_options or {})
    async with sim_process(**options) as sim:
        config = bridge_settings(kafka, sim, shard_capacity=capacity, **(settings or {}))
        async with running_worker(config) as running:
            await running.wait_ready()
            start_seq = (await sim.stats())["lastSeq"]
            await sim.admin("POST", "/sim/generator", paused=False)
            await asyncio.sleep(before_s)
            window_start = datetime.now(UTC)
            injected = time.monotonic()
            await inject(sim, running)
            check = recovered or _reconciled_after
            deadline = time.monotonic() + 60
            while not check(running, injected):
                assert time.monotonic() < deadline, "the worker did not recover from the fault"
                assert not running.task.done(), f"worker ended: {running.task.exception()!r}"
                await asyncio.sleep(0.05)
            window_end = datetime.now(UTC)
            await asyncio.sleep(after_s)
            await sim.pause()
            log = [e for e in await sim.events() if e["seq"] > start_seq]
            records, missing = await _settle(kafka, config, log)
            stats = await sim.stats()
            shards = list(running.worker.shards)
            outcome = Outcome(log, records, missing, running, stats, (window_start, window_end), shards)
            _assert_promise(outcome, late_seqs or set())
            mismatches, lines = await run_audit(config)
            assert mismatches == 0, lines
            assert await running.stop() == 0
            return outcome


def _reconciled_after(running: RunningWorker, after: float) -> bool:
    """Every shard is ready and finished a reconciliation that started after ``after``."""
    return running.worker.readiness()[0] and all(
        s.stats.last_reconciled is not None and s.stats.last_reconciled > after for s in running.worker.shards
    )


def any_reconnected_after(running: RunningWorker, after: float) -> bool:
    """Some shard reconnected and every shard is ready and reconciled since ``after``."""
    return _reconciled_after(running, after) and any(
        s.stats.last_connected is not None and s.stats.last_connected > after for s in running.worker.shards
    )


async def _settle(
    kafka: KafkaBroker, settings: Any, log: list[dict[str, Any]], timeout_s: float = 30.0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Read until the log's last change per (user, kind) is in Kafka, or time out."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = await asyncio.to_thread(event_records, kafka, settings)
        ids = {r["eventId"] for r in records}
        missing = [e for e in log if expected_event_id(e) not in ids]
        last = _last_per_key(log)
        if all(expected_event_id(e) in ids for e in last.values()) or time.monotonic() > deadline:
            return records, missing
        await asyncio.sleep(0.5)


def _key(entry: dict[str, Any]) -> tuple[str, str]:
    return entry["userId"], entry["kind"]


def _last_per_key(log: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    last: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in log:
        last[_key(entry)] = entry
    return last


def _assert_promise(outcome: Outcome, late_seqs: set[int]) -> None:
    ids = [r["eventId"] for r in outcome.records]
    duplicated = {i for i in ids if ids.count(i) > 1} if len(ids) != len(set(ids)) else set()
    assert not duplicated, f"{len(duplicated)} eventIds written twice"
    assert per_user_ordered(outcome.records), "a user's records went back in time"
    present = {r["eventId"] for r in outcome.records}
    later_present: dict[tuple[str, str], str] = {}
    for entry in outcome.log:
        if expected_event_id(entry) in present:
            later_present[_key(entry)] = entry["changedAt"]
    # A frame that arrived after a newer change of its user is dropped by design
    # (per-user order); the newer one must be there.
    missing = []
    for entry in outcome.missing:
        if entry["seq"] in late_seqs:
            assert later_present.get(_key(entry), "") > entry["changedAt"], (
                f"late and not superseded: {entry}"
            )
        else:
            missing.append(entry)
    assert missing == [], f"{len(missing)} changes lost, e.g. {missing[:3]}"
