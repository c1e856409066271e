"""bridge.shard with fakes: the parts of the lifecycle that need no socket."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from bridge.errors import DeliveryError, SinkError
from bridge.events import ShardState
from bridge.model import AgentState
from bridge.settings import Settings
from bridge.shard import Shard


class FakeSink:
    """Records what the shard hands to Kafka."""

    def __init__(self) -> None:
        self.tombstones: list[str] = []
        self.started = False
        self.closed = False
        self.failed: asyncio.Future[Any] | None = None
        self.healthy = True
        self.pending = 0
        self.error = None

    async def start(self) -> None:
        self.started = True
        self.failed = asyncio.get_running_loop().create_future()

    def submit_tombstone(self, user_id: str) -> None:
        assert self.started, "nothing is written before the sink fenced the previous owner"
        self.tombstones.append(user_id)

    async def close(self) -> None:
        self.closed = True


async def test_users_removed_before_the_state_loads_are_still_tombstoned() -> None:
    """A member list that shrinks before the shard started still deletes the leavers' state."""
    sink = FakeSink()
    loaded: list[Sequence[str]] = []

    async def load(users: Sequence[str]) -> Mapping[str, AgentState]:
        loaded.append(list(users))
        return {u: AgentState(u) for u in users}

    shard = Shard(
        0,
        ["a", "b", "c"],
        rest=Any,  # type: ignore[arg-type]
        sink=sink,  # type: ignore[arg-type]
        state=ShardState(),
        settings=Settings(),
        socket_factory=Any,  # type: ignore[arg-type]
        load_states=load,
    )
    added, removed = await shard.set_users(["a", "c", "d"])
    assert (added, removed) == (["d"], ["b"])
    await shard.stop()
    await shard.run()
    assert loaded == [["a", "c", "d"]]
    assert sink.tombstones == ["b"]
    assert sink.closed


async def test_an_empty_shard_is_ready_once_connected() -> None:
    """A shard whose member list is empty does not hold /readyz down forever."""
    sink = FakeSink()
    await sink.start()
    shard = Shard(
        1,
        [],
        rest=Any,  # type: ignore[arg-type]
        sink=sink,  # type: ignore[arg-type]
        state=ShardState(),
        settings=Settings(),
        socket_factory=Any,  # type: ignore[arg-type]
    )
    assert not shard.ready
    shard._connected = True
    assert shard.ready


async def test_a_task_that_ignores_cancellation_does_not_hold_the_shard(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Serving tasks are cancelled with a bound: a stuck one is named and left, the shard goes on."""
    from bridge.shard import TASK_STOP_TIMEOUT_S, _cancel_all

    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # ignores its cancellation

    async def polite() -> None:
        await asyncio.sleep(3600)

    stuck, fine = asyncio.create_task(stubborn()), asyncio.create_task(polite())
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await _cancel_all({"reader": stuck, "watchdog": fine})
    assert loop.time() - started < TASK_STOP_TIMEOUT_S + 1
    assert fine.cancelled()
    assert "['reader']" in caplog.text
    release.set()
    await stuck


async def test_a_move_to_another_shard_is_never_tombstoned() -> None:
    """A removed agent that another shard owns now keeps its state; a deleted one is tombstoned."""
    sink = FakeSink()
    asked: list[list[str]] = []

    async def elsewhere(users: Sequence[str]) -> set[str]:
        asked.append(sorted(users))
        return {"b"}

    async def no_orphans(_members: Sequence[str]) -> list[str]:
        return []

    shard = Shard(
        0,
        ["a", "b", "c"],
        rest=Any,  # type: ignore[arg-type]
        sink=sink,  # type: ignore[arg-type]
        state=ShardState(),
        settings=Settings(),
        socket_factory=Any,  # type: ignore[arg-type]
        owned_elsewhere=elsewhere,
        find_orphans=no_orphans,
    )
    await shard.set_users(["a"])
    await shard.stop()
    await shard.run()
    assert asked == [["b", "c"]]
    assert sink.tombstones == ["c"]


async def test_orphans_found_after_the_load_are_tombstoned_but_never_members() -> None:
    """The orphan finder's agents are tombstoned once the states are loaded, members never."""
    sink = FakeSink()

    async def orphans(members: Sequence[str]) -> list[str]:
        assert list(members) == ["a"]
        return ["gone", "a"]

    shard = Shard(
        0,
        ["a"],
        rest=Any,  # type: ignore[arg-type]
        sink=sink,  # type: ignore[arg-type]
        state=ShardState(),
        settings=Settings(),
        socket_factory=Any,  # type: ignore[arg-type]
        find_orphans=orphans,
    )
    await shard.stop()
    await shard.run()
    assert sink.tombstones == ["gone"]


class FailingRest:
    """A Genesys whose channel creation always fails (the shard keeps retrying)."""

    def __init__(self) -> None:
        self.attempts = 0

    async def create_channel(self) -> Any:
        self.attempts += 1
        raise ConnectionError("no route to Genesys")

    async def invalidate_token(self) -> None:
        return None


async def test_a_fatal_sink_error_ends_the_shard_instead_of_reconnecting_forever() -> None:
    """A producer that failed for good (not fenced) ends the shard, so the fleet restarts it anew."""
    sink = FakeSink()
    rest = FailingRest()
    shard = Shard(
        0,
        ["a"],
        rest=rest,  # type: ignore[arg-type]
        sink=sink,  # type: ignore[arg-type]
        state=ShardState(),
        settings=Settings(backoff_initial_s=0.01, backoff_max_s=0.01),
        socket_factory=Any,  # type: ignore[arg-type]
    )
    sink.error = DeliveryError("shard 0: fatal Kafka error during commit")  # type: ignore[assignment]
    with pytest.raises(DeliveryError):
        await asyncio.wait_for(shard.run(), 5)
    assert rest.attempts == 1
    assert not shard.fenced


async def test_a_failed_state_load_closes_the_sink() -> None:
    """The producer started for fencing is closed when the state load fails (no leaked thread)."""
    sink = FakeSink()

    async def load(_users: Sequence[str]) -> Mapping[str, AgentState]:
        raise SinkError("cannot read the state topic")

    shard = Shard(
        0,
        ["a"],
        rest=Any,  # type: ignore[arg-type]
        sink=sink,  # type: ignore[arg-type]
        state=ShardState(),
        settings=Settings(),
        socket_factory=Any,  # type: ignore[arg-type]
        load_states=load,
    )
    with pytest.raises(SinkError):
        await shard.run()
    assert sink.closed
