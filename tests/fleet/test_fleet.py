"""bridge.fleet.fleet with fakes: the fleet's reaction to membership events, without Kafka."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from bridge import fleet as fleet_module
from bridge import metrics
from bridge.errors import FencedError
from bridge.fleet import Fleet, MapRecord
from bridge.fleet import slot as slot_module
from bridge.fleet.membership import _Assigned, _CaughtUp, _Disowned, _Record, _Revoked
from bridge.settings import Settings
from bridge.shard import ShardStats

SETTINGS = Settings(id="unit", kafka_session_timeout_ms=1000, drain_timeout_s=1.0)


class FakeShard:
    """Runs until stopped or fenced; connects at once unless told otherwise."""

    def __init__(self, shard_id: int, users: Sequence[str], connects: bool = True) -> None:
        self.shard_id = shard_id
        self.users = list(users)
        self.fenced = False
        self.stats = ShardStats()
        self.connected = asyncio.Event()
        self._end = asyncio.Event()
        self._connects = connects

    @property
    def ready(self) -> bool:
        return self.stats.last_connected is not None and not self.fenced

    async def run(self) -> None:
        if self._connects:
            self.stats.last_connected = 1.0
            self.connected.set()
        await self._end.wait()

    async def stop(self) -> None:
        self._end.set()

    def fence(self) -> None:
        self.fenced = True
        self._end.set()

    def crash(self) -> None:
        self._end.set()

    async def set_users(self, users: Sequence[str]) -> tuple[list[str], list[str]]:
        self.users = list(users)
        return [], []

    def describe(self) -> dict[str, object]:
        return {"connected": self.ready}


class FakeCoordinator:
    """Fenced on its first run (another worker coordinated meanwhile), then runs until cancelled."""

    runs = 0

    def __init__(self) -> None:
        self.refreshes = 1
        self.last_unassigned = 0
        self.conflict = None

    async def run(self) -> None:
        FakeCoordinator.runs += 1
        if FakeCoordinator.runs == 1:
            raise FencedError("coordinator fenced during map write")
        await asyncio.Event().wait()


def _fleet(shards: list[FakeShard], clock: Callable[[], float] | None = None, **kwargs: Any) -> Fleet:
    def factory(shard_id: int, users: Sequence[str], _client: int) -> Any:
        shard = FakeShard(shard_id, users, **kwargs)
        shards.append(shard)
        return shard

    extra: dict[str, Any] = {} if clock is None else {"clock": clock}
    return Fleet(
        SETTINGS,
        shard_factory=factory,
        coordinator_factory=lambda _added: FakeCoordinator(),  # type: ignore[arg-type,return-value]
        consumer_factory=lambda _conf: None,
        **extra,
    )


def _own(fleet: Fleet, p: int, users: tuple[str, ...] = ("a", "b")) -> None:
    fleet._handle(_Assigned([p]))
    record = MapRecord(shard=p, epoch=1, client_index=0, users=users, bridge_id=SETTINGS.id)
    fleet._handle(_Record(p, 0, record))
    fleet._handle(_CaughtUp(p))


async def _until(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        if loop.time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.01)


async def _close(fleet: Fleet) -> None:
    fleet._shutting_down = True
    await fleet._coordination.stop()
    for slot in [*fleet._slots.values(), *fleet._lost.values()]:
        slot.revoked = True
        slot.wake.set()
        if slot.driver is not None:
            await slot.driver


async def test_a_shard_fenced_while_the_session_was_lost_restarts_when_the_partition_comes_back() -> None:
    """Lost session, fenced meanwhile, partition given back: a new shard runs (the slot is not stuck)."""
    shards: list[FakeShard] = []
    fleet = _fleet(shards)
    _own(fleet, 1)
    await _until(lambda: len(fleet.shards) == 1)
    fleet._handle(_Revoked([1], lost=True, done=None))
    shards[0].fence()
    await asyncio.sleep(0.05)
    _own(fleet, 1)
    await _until(lambda: len(shards) == 2 and len(fleet.shards) == 1)
    assert fleet.readiness()[0]
    await _close(fleet)


async def _owner_of_0_whose_coordinator_was_fenced(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Fleet, list[FakeShard]]:
    """A fleet owning partition 0 whose first coordinator run ended fenced."""
    monkeypatch.setattr(FakeCoordinator, "runs", 0)
    shards: list[FakeShard] = []
    fleet = _fleet(shards)
    _own(fleet, 0)
    await _until(lambda: FakeCoordinator.runs == 1 and not fleet.is_coordinator)
    return fleet, shards


async def test_a_fenced_coordinator_is_restarted_while_partition_0_stays_here(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Fenced but still the owner of partition 0: not ready meanwhile, then coordinating again."""
    fleet, _shards = await _owner_of_0_whose_coordinator_was_fenced(monkeypatch)
    await _until(lambda: len(fleet.shards) == 1)
    assert not fleet.readiness()[0], "ready with partition 0 owned and no coordinator"
    await _until(
        lambda: fleet.is_coordinator, timeout_s=fleet_module.coordinator_fenced_retry_s(SETTINGS) + 3
    )
    assert fleet.readiness()[0]
    await _close(fleet)


async def test_a_shard_that_cannot_restart_within_the_deadline_fails_liveness() -> None:
    """Owned, mapped, but not running for longer than SHARD_RESTART_DEADLINE_S: /healthz fails."""
    now = [100.0]
    shards: list[FakeShard] = []
    fleet = _fleet(shards, clock=lambda: now[0], connects=False)
    _own(fleet, 1)
    await _until(lambda: len(fleet.shards) == 1)
    assert fleet.liveness()[0]
    shards[0].crash()  # ends before it ever connected; restarts keep failing
    await _until(lambda: not fleet.shards)
    assert not fleet.readiness()[0]
    assert fleet.liveness()[0], "a restarting shard is alive for a while"
    now[0] += fleet_module.SHARD_RESTART_DEADLINE_S + 1
    alive, details = fleet.liveness()
    assert not alive
    assert details["down"] == [1]
    await _close(fleet)


async def test_partition_0_given_back_after_a_lost_session_coordinates_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The coordinator was fenced while the session was lost; regaining partition 0 restarts it."""
    fleet, shards = await _owner_of_0_whose_coordinator_was_fenced(monkeypatch)
    fleet._handle(_Revoked([0], lost=True, done=None))
    _own(fleet, 0)
    await _until(lambda: fleet.is_coordinator, timeout_s=1.0)
    assert len(shards) == 1, "the shard kept running"
    await _close(fleet)


class _Coordinator:
    """Stands in for bridge.fleet.Coordinator: reports a roster that does not fit, then waits."""

    refreshes = 0

    def __init__(self, _announce: Callable[[int], None]) -> None:
        self.reported = asyncio.Event()

    async def run(self) -> None:
        metrics.ROSTER_USERS.set(350)
        metrics.ROSTER_UNASSIGNED.set(50)
        self.refreshes = 1
        self.reported.set()
        await asyncio.Event().wait()


def _no_shard(*_args: Any) -> Any:
    raise AssertionError("no shard in this test")


async def test_losing_the_coordinator_role_clears_the_roster_gauges() -> None:
    """A former coordinator reports 0 unassigned: max() over the fleet must not keep its stale 50."""
    fleet = Fleet(Settings(), shard_factory=_no_shard, coordinator_factory=_Coordinator)  # type: ignore[arg-type]
    fleet._coordination.start()
    assert isinstance(fleet.coordinator, _Coordinator)
    await asyncio.wait_for(fleet.coordinator.reported.wait(), 5)
    assert metrics.ROSTER_UNASSIGNED._value.get() == 50
    await fleet._coordination.stop()
    assert metrics.ROSTER_UNASSIGNED._value.get() == 0
    assert metrics.ROSTER_USERS._value.get() == 0


async def test_a_shard_fenced_while_its_partition_stays_here_starts_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The partition came back with its shard still running, then the interim owner's sink fenced it:
    no rebalance follows (the partition is ours), so after the retry delay a new shard runs."""
    monkeypatch.setattr(slot_module, "coordinator_fenced_retry_s", lambda _settings: 0.2)
    shards: list[FakeShard] = []
    fleet = _fleet(shards)
    _own(fleet, 1)
    await _until(lambda: len(fleet.shards) == 1)
    shards[0].fence()
    await asyncio.sleep(0.1)
    assert fleet._slots[1].fenced and len(shards) == 1, "not at once: the fencer may own it now"
    await _until(lambda: len(shards) == 2 and len(fleet.shards) == 1)
    assert not fleet._slots[1].fenced
    await _close(fleet)


async def test_a_fenced_shard_the_group_does_not_give_us_is_not_started_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The watch doubts the partition (the group's record gives it to another member): the
    retry after the fence waits instead of fencing that owner; once the doubt is gone it starts."""
    monkeypatch.setattr(slot_module, "coordinator_fenced_retry_s", lambda _settings: 0.2)
    shards: list[FakeShard] = []
    fleet = _fleet(shards)
    doubted = {1}
    monkeypatch.setattr(fleet._driver, "_doubted", lambda: frozenset(doubted))
    _own(fleet, 1)
    await _until(lambda: len(fleet.shards) == 1)
    shards[0].fence()
    await asyncio.sleep(0.7)
    assert fleet._slots[1].fenced and len(shards) == 1, "doubted: not started again"
    doubted.clear()
    await _until(lambda: len(shards) == 2 and len(fleet.shards) == 1)
    await _close(fleet)


async def test_disowned_partitions_stop_their_shards_and_keep_the_others() -> None:
    """The watch found partitions the group gives to others: their shards stop, even one held lost."""
    shards: list[FakeShard] = []
    fleet = _fleet(shards)
    for p in (1, 2, 3):
        _own(fleet, p)
    await _until(lambda: len(fleet.shards) == 3)
    fleet._handle(_Revoked([3], lost=True, done=None))
    fleet._handle(_Disowned([2, 3]))
    await _until(lambda: len(fleet.shards) == 1)
    assert sorted(fleet._slots) == [1]
    assert fleet._lost == {}
    await _until(lambda: [s.shard_id for s in shards if not s._end.is_set()] == [1])
    await _close(fleet)
