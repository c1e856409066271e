"""bridge.sweep with fakes: paced rounds, corrections only for real losses, budget-aware, counted."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from bridge import metrics
from bridge.events import Accepted, ShardState
from bridge.genesys.budget import RequestBudget
from bridge.model import Change, Kind, Origin, PresenceValue, RoutingValue, event_id
from bridge.sweep import SWEEP_BATCH, SWEEP_BUDGET_POLL_S, SWEEP_IN_FLIGHT_GRACE_S, Sweep

NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)
OLD = NOW - timedelta(minutes=10)


class Stop(Exception):
    """Ends a sweep's endless loop in a test."""


def routing(user: str, status: str, at: datetime, origin: Origin = Origin.RECONCILE) -> Change:
    value = RoutingValue(status)
    return Change(
        user_id=user,
        kind=Kind.ROUTING_STATUS,
        changed_at=at,
        value=value,
        observed_at=NOW,
        origin=origin,
        event_id=event_id(user, Kind.ROUTING_STATUS, at, value),
    )


def presence(user: str, sp: str, at: datetime) -> Change:
    value = PresenceValue(sp, f"d-{sp.lower()}")
    return Change(
        user_id=user,
        kind=Kind.PRESENCE,
        changed_at=at,
        value=value,
        observed_at=NOW,
        origin=Origin.RECONCILE,
        event_id=event_id(user, Kind.PRESENCE, at, value),
    )


class Genesys:
    """Current states by user; counts the calls."""

    def __init__(self, changes: dict[str, list[Change]]) -> None:
        self.changes = changes
        self.calls: list[list[str]] = []

    async def fetch(self, users: Sequence[str], *, observed_at: datetime) -> list[Change]:
        assert observed_at == NOW
        self.calls.append(list(users))
        return [c for u in users for c in self.changes.get(u, [])]


def make_sweep(
    state: ShardState,
    genesys: Genesys,
    users: list[str],
    *,
    sleeps: list[float] | None = None,
    max_sleeps: int = 100,
    active: bool = True,
    budget: RequestBudget | None = None,
    interval_s: float = 90.0,
) -> tuple[Sweep, list[Change]]:
    written: list[Change] = []
    record = sleeps if sleeps is not None else []

    def accept(change: Change) -> bool:
        accepted = state.apply(change)
        if isinstance(accepted, Accepted):
            written.append(accepted.change)
        return isinstance(accepted, Accepted)

    async def sleep(seconds: float) -> None:
        record.append(seconds)
        if len(record) >= max_sleeps:
            raise Stop

    sweep = Sweep(
        users=lambda: users,
        state=state,
        fetch=genesys.fetch,
        budget=lambda: budget,
        accept=accept,
        active=lambda: active,
        interval_s=interval_s,
        wall=lambda: NOW,
        sleep=sleep,
        rng=random.Random(1),
    )
    return sweep, written


def corrections() -> float:
    return float(metrics.SWEEP_CORRECTIONS._value.get())


async def test_a_round_spreads_its_batches_evenly_over_the_interval() -> None:
    """250 agents, 90 s: three calls of at most 100, 30 s apart after a random first phase."""
    users = [f"u{i}" for i in range(250)]
    genesys = Genesys({})
    sleeps: list[float] = []
    sweep, _ = make_sweep(ShardState(), genesys, users, sleeps=sleeps, max_sleeps=5)
    with pytest.raises(Stop):
        await sweep.run()
    assert [len(c) for c in genesys.calls] == [SWEEP_BATCH, SWEEP_BATCH, 50, SWEEP_BATCH]
    assert 0 <= sleeps[0] < 30.0
    assert sleeps[1:4] == [30.0, 30.0, 30.0]
    assert sweep.stats.rounds == 1


async def test_only_real_differences_are_written_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    """A lost change is corrected as a reconcile record, counted and named; unchanged agents are not."""
    state = ShardState()
    state.apply(routing("same", "IDLE", OLD, Origin.STREAM))
    state.apply(routing("lost", "IDLE", OLD, Origin.STREAM))
    genesys = Genesys(
        {
            "same": [routing("same", "IDLE", OLD)],
            "lost": [routing("lost", "OFF_QUEUE", OLD + timedelta(minutes=1))],
        }
    )
    sweep, written = make_sweep(state, genesys, ["same", "lost"])
    before = corrections()
    with caplog.at_level(logging.WARNING, logger="bridge.sweep"):
        assert await sweep.sweep_batch(["same", "lost"]) == ["lost"]
    assert [(c.user_id, c.origin) for c in written] == [("lost", Origin.RECONCILE)]
    assert corrections() == before + 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["sweep corrected 1 agents whose change the stream lost: lost"]


async def test_a_timestamp_only_difference_is_not_a_correction() -> None:
    """The same value with a newer Genesys time is not written (nothing a consumer sees was lost)."""
    state = ShardState()
    state.apply(routing("a", "IDLE", OLD, Origin.STREAM))
    sweep, written = make_sweep(
        state, Genesys({"a": [routing("a", "IDLE", OLD + timedelta(minutes=1))]}), ["a"]
    )
    assert await sweep.sweep_batch(["a"]) == []
    assert written == []


async def test_a_stream_change_that_arrives_during_the_read_is_never_overwritten() -> None:
    """The agent changed on the stream while its batch was read: the older REST value is not written."""
    state = ShardState()
    state.apply(routing("a", "IDLE", OLD, Origin.STREAM))
    genesys = Genesys({"a": [routing("a", "INTERACTING", OLD + timedelta(minutes=1))]})
    inner = genesys.fetch

    async def fetch_while_the_stream_moves(users: Sequence[str], *, observed_at: datetime) -> list[Change]:
        result = await inner(users, observed_at=observed_at)
        state.apply(routing("a", "OFF_QUEUE", OLD + timedelta(seconds=30), Origin.STREAM))
        return result

    genesys.fetch = fetch_while_the_stream_moves  # type: ignore[method-assign]
    sweep, written = make_sweep(state, genesys, ["a"])
    assert await sweep.sweep_batch(["a"]) == []
    current = state.get("a")
    assert current is not None and current.routing is not None
    assert current.routing.value.status == "OFF_QUEUE" and written == []


async def test_both_kinds_of_one_agent_are_corrected_in_one_batch() -> None:
    """Presence and routing status of one agent both lost: both written, the agent counted once."""
    state = ShardState()
    state.apply(routing("a", "IDLE", OLD, Origin.STREAM))
    genesys = Genesys(
        {"a": [presence("a", "BREAK", OLD), routing("a", "OFF_QUEUE", OLD + timedelta(seconds=1))]}
    )
    sweep, written = make_sweep(state, genesys, ["a"])
    before = corrections()
    assert await sweep.sweep_batch(["a"]) == ["a"]
    assert [c.kind for c in written] == [Kind.PRESENCE, Kind.ROUTING_STATUS]
    assert corrections() == before + 1


async def test_a_young_difference_is_left_to_the_stream() -> None:
    """A change younger than the in-flight grace is probably still on the stream: not corrected yet."""
    state = ShardState()
    state.apply(routing("a", "IDLE", OLD, Origin.STREAM))
    young = NOW - timedelta(seconds=SWEEP_IN_FLIGHT_GRACE_S / 2)
    sweep, written = make_sweep(state, Genesys({"a": [routing("a", "OFF_QUEUE", young)]}), ["a"])
    assert await sweep.sweep_batch(["a"]) == []
    assert written == []


async def test_an_inactive_shard_is_not_swept() -> None:
    """While the shard is in a gap or reconciling, the batch is skipped without a call."""
    genesys = Genesys({})
    sweep, _ = make_sweep(ShardState(), genesys, ["a"], active=False)
    assert await sweep.sweep_batch(["a"]) == []
    assert genesys.calls == [] and sweep.stats.skipped == 1


async def test_the_sweep_waits_while_half_the_budget_is_spent() -> None:
    """With less than half of the REST budget unspent the sweep holds back; it calls once there is room."""
    now = [0.0]
    budget = RequestBudget(10, clock=lambda: now[0])
    for _ in range(6):
        await budget.acquire()  # 6 of 10 spent at t=0: 4 spare, below the reserve of 5
    genesys = Genesys({})
    called_at: list[float] = []
    inner = genesys.fetch

    async def fetch(users: Sequence[str], *, observed_at: datetime) -> list[Change]:
        called_at.append(now[0])
        return await inner(users, observed_at=observed_at)

    genesys.fetch = fetch  # type: ignore[method-assign]
    sweep, _ = make_sweep(ShardState(), genesys, ["a"], budget=budget, interval_s=10.0)

    async def sleep(seconds: float) -> None:
        now[0] += seconds
        if called_at:
            raise Stop

    sweep._sleep = sleep
    with pytest.raises(Stop):
        await sweep.run()
    assert called_at and called_at[0] >= 60.0, "no call before the spent requests left the window"
    assert called_at[0] < 60.0 + SWEEP_BUDGET_POLL_S + 1e-9


def test_interval_must_be_positive() -> None:
    """A zero interval is 'off' in the settings; the Sweep itself refuses it."""
    with pytest.raises(ValueError, match="positive"):
        make_sweep(ShardState(), Genesys({}), [], interval_s=0)


def test_spare_counts_the_window_and_a_429_pause() -> None:
    """RequestBudget.spare: unspent requests in the window, none while paused after a 429."""
    now = [0.0]
    budget = RequestBudget(3, clock=lambda: now[0])
    assert budget.spare() == 3
    budget._spent.extend([0.0, 0.0])
    assert budget.spare() == 1
    now[0] = 60.0
    assert budget.spare() == 3
    budget.pause_until(65.0)
    assert budget.spare() == 0


async def test_an_unexpected_failure_does_not_end_the_sweep() -> None:
    """A batch that fails with an unexpected error is counted and logged; the next batch is still read."""
    calls: list[list[str]] = []

    async def fetch(users: Sequence[str], *, observed_at: datetime) -> list[Change]:
        calls.append(list(users))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return []

    genesys = Genesys({})
    genesys.fetch = fetch  # type: ignore[method-assign]
    sweep, _ = make_sweep(ShardState(), genesys, ["a"], max_sleeps=3)
    with pytest.raises(Stop):
        await sweep.run()
    assert len(calls) == 2 and sweep.stats.failures == 1
