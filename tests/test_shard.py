"""bridge.shard with fakes: the parts of the lifecycle that need no socket."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from bridge.errors import DeliveryError, GenesysError, SinkError
from bridge.events import ShardState
from bridge.genesys.protocol import user_topic
from bridge.genesys.rest import ChannelInfo
from bridge.model import AgentState, Change, Kind, Origin, RoutingValue
from bridge.settings import Settings
from bridge.shard import Shard


class FakeSink:
    """Records what the shard hands to Kafka."""

    def __init__(self) -> None:
        self.tombstones: list[str] = []
        self.submitted: list[str] = []
        self.started = False
        self.closed = False
        self.failed: asyncio.Future[Any] | None = None
        self.healthy = True
        self.pending = 0
        self.error = None

    async def start(self) -> None:
        self.started = True
        self.failed = asyncio.get_running_loop().create_future()

    def submit(self, accepted: Any, _channel_id: str | None) -> None:
        self.submitted.append(accepted.change.user_id)

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


CHANNEL = ChannelInfo(id="chan-1", connect_uri="wss://sim/chan-1", expires=datetime(2099, 1, 1, tzinfo=UTC))
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def routing(user: str, status: str = "IDLE") -> Change:
    return Change(
        user_id=user,
        kind=Kind.ROUTING_STATUS,
        changed_at=T0,
        value=RoutingValue(status),
        observed_at=T0,
        origin=Origin.RECONCILE,
    )


class SubscribingRest:
    """A Genesys that records subscription calls; a PUT can be held open, a POST can fail."""

    def __init__(self) -> None:
        self.puts: list[list[str]] = []
        self.posts: list[list[str]] = []
        self.hold_put: asyncio.Event | None = None
        self.put_started = asyncio.Event()
        self.fail_post = False
        self.current: list[Change] = []

    async def create_channel(self) -> ChannelInfo:
        return CHANNEL

    async def put_subscriptions(
        self, _channel: str, topics: Sequence[str], ignore_errors: bool = False
    ) -> list[str]:
        self.puts.append(list(topics))
        self.put_started.set()
        hold, self.hold_put = self.hold_put, None
        if hold is not None:
            await hold.wait()
        return list(topics)

    async def post_subscriptions(
        self, _channel: str, topics: Sequence[str], ignore_errors: bool = False
    ) -> list[str]:
        self.posts.append(list(topics))
        if self.fail_post:
            raise GenesysError("service unavailable", status=503)
        return list(topics)

    async def current_changes(self, user_ids: Sequence[str], *, observed_at: datetime) -> list[Change]:
        return [c for c in self.current if c.user_id in user_ids]


class IdleSocket:
    async def connect(self, _uri: str) -> None:
        return None

    async def close(self) -> None:
        return None


def _shard(rest: SubscribingRest, sink: FakeSink, users: list[str], **kwargs: Any) -> Shard:
    return Shard(
        0,
        users,
        rest=rest,  # type: ignore[arg-type]
        sink=sink,  # type: ignore[arg-type]
        state=ShardState(),
        settings=Settings(),
        socket_factory=IdleSocket,  # type: ignore[arg-type]
        **kwargs,
    )


async def test_users_added_while_the_shard_subscribes_are_subscribed_too() -> None:
    """A member list changed during the connect's PUT is PUT again before the shard counts as connected."""
    rest, sink = SubscribingRest(), FakeSink()
    await sink.start()
    shard = _shard(rest, sink, ["a"])
    gate = rest.hold_put = asyncio.Event()
    connecting = asyncio.create_task(shard._connect("start"))
    await rest.put_started.wait()
    await shard.set_users(["a", "b"])
    gate.set()
    await connecting
    shard._set_disconnected()
    assert rest.puts[-1] == [user_topic("a"), user_topic("b")]


async def test_a_failed_subscription_change_resubscribes_everything() -> None:
    """A POST that fails is not lost: the shard asks its serving loop to subscribe the whole list again."""
    rest, sink = SubscribingRest(), FakeSink()
    await sink.start()
    shard = _shard(rest, sink, ["a"])
    await shard._connect("start")
    rest.fail_post = True
    added, _removed = await shard.set_users(["a", "b"])
    assert added == ["b"]
    assert shard._resync.is_set()
    shard._set_disconnected()


async def test_added_users_are_reconciled_against_their_loaded_state() -> None:
    """An agent added in place whose state did not change is not written again."""
    rest, sink = SubscribingRest(), FakeSink()
    await sink.start()
    known = ShardState()
    assert known.apply(routing("b")) is not None
    loads: list[list[str]] = []

    async def load(users: Sequence[str]) -> Mapping[str, AgentState]:
        loads.append(list(users))
        state = known.get("b")
        assert state is not None
        return {"b": state} if "b" in users else {}

    shard = _shard(rest, sink, ["a"], load_states=load)
    shard._loaded = True
    await shard._connect("start")
    rest.current = [routing("b")]
    await shard.set_users(["a", "b"])
    shard._set_disconnected()
    assert loads == [["b"]]
    assert sink.submitted == []
