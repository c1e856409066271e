"""bridge.shard with fakes: the parts of the lifecycle that need no socket."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

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


# --------------------------------------------------------------------- liveness under backpressure

PONG = '{"topicName": "channel.metadata", "eventBody": {"message": "pong"}}'


def _presence_frame(user: str) -> str:
    definition = '{"id": "d1", "systemPresence": "AVAILABLE"}'
    body = f'{{"presenceDefinition": {definition}, "modifiedDate": "2026-05-01T09:00:00Z"}}'
    return f'{{"topicName": "v2.users.{user}.presence", "eventBody": {body}}}'


class PongingSocket:
    """An in-memory notification socket whose server answers every ping with a pong."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[str] = asyncio.Queue()
        self.pings = 0
        self.closed = False

    async def connect(self, _uri: str) -> None:
        return None

    async def recv(self) -> str:
        return await self.inbox.get()

    async def send(self, text: str) -> None:
        if "ping" in text:
            self.pings += 1
            self.inbox.put_nowait(PONG)

    async def close(self) -> None:
        self.closed = True


class FakeRest:
    """The REST calls a connecting, reconciling shard makes; the channel never expires."""

    async def create_channel(self) -> Any:
        from datetime import UTC, datetime, timedelta

        from bridge.genesys.rest import ChannelInfo

        return ChannelInfo(
            id="ch-1", connect_uri="wss://sim/ch-1", expires=datetime.now(UTC) + timedelta(days=1)
        )

    async def put_subscriptions(self, _channel: str, topics: Sequence[str], **_kw: Any) -> list[str]:
        return list(topics)

    async def current_changes(self, _users: Sequence[str], **_kw: Any) -> list[Any]:
        return []

    async def list_channels(self) -> list[Any]:
        return []


class SlowKafkaSink(FakeSink):
    """A sink whose first record puts the shard over its backpressure mark for ``stall_s``."""

    def __init__(self, stall_s: float) -> None:
        super().__init__()
        self.stall_s = stall_s
        self.drained = asyncio.Event()

    def submit(self, _accepted: Any, _channel: str | None) -> None:
        from bridge.shard import MAX_PENDING_RECORDS

        self.pending = MAX_PENDING_RECORDS + 1

    async def drain_to(self, _max_pending: int) -> None:
        await asyncio.sleep(self.stall_s)
        self.pending = 0
        self.drained.set()


async def test_a_reader_waiting_on_kafka_backpressure_keeps_its_socket() -> None:
    """Time the reader spends blocked on a slow Kafka is not silence: pongs wait unread, no reconnect."""
    sink = SlowKafkaSink(stall_s=1.5)
    sockets: list[PongingSocket] = []

    def new_socket() -> PongingSocket:
        sockets.append(PongingSocket())
        return sockets[-1]

    shard = Shard(
        2,
        ["u1"],
        rest=FakeRest(),  # type: ignore[arg-type]
        sink=sink,  # type: ignore[arg-type]
        state=ShardState(),
        settings=Settings(ping_interval_s=0.2, pong_timeout_s=0.3, backoff_initial_s=0.05),
        socket_factory=new_socket,  # type: ignore[arg-type]
    )
    task = asyncio.create_task(shard.run())
    try:
        while shard.stats.reconciles < 1:
            await asyncio.sleep(0.01)
        sockets[0].inbox.put_nowait(_presence_frame("u1"))
        await asyncio.wait_for(sink.drained.wait(), 5)
        await asyncio.sleep(0.5)  # the watchdog had time to act on the pongs read after the drain
        assert shard.stats.connects == 1, "the socket was torn down while the reader waited on Kafka"
        assert sockets[0].pings >= 1 and not sockets[0].closed
    finally:
        await shard.stop()
        await asyncio.wait_for(task, 10)


def test_the_sweep_is_on_by_default_and_reads_only_a_connected_shard() -> None:
    """Each shard has a sweep unless BRIDGE_SWEEP_INTERVAL_S is 0; it reads only while ready."""

    def shard(settings: Settings) -> Shard:
        return Shard(
            3,
            ["a"],
            rest=Any,  # type: ignore[arg-type]
            sink=FakeSink(),  # type: ignore[arg-type]
            state=ShardState(),
            settings=settings,
            socket_factory=Any,  # type: ignore[arg-type]
        )

    on = shard(Settings())
    assert on.sweep is not None and on.sweep.interval_s == Settings().sweep_interval_s == 900.0
    assert not on._sweepable()
    on._connected, on._subscribed = True, 1
    assert on._sweepable()
    assert shard(Settings(sweep_interval_s=0)).sweep is None
