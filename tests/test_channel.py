"""bridge.channel: the serving tasks of a shard's channel end within a bound; backpressure is not silence."""

from __future__ import annotations

import asyncio

import pytest

from bridge import metrics
from bridge.channel import MAX_PENDING_RECORDS, TASK_STOP_TIMEOUT_S, WATCHDOG_TICK_S, cancel_all
from bridge.events import Accepted, ShardState
from bridge.settings import Settings
from bridge.shard import Shard
from tests.shard_fakes import FakeRest, FakeSink


async def test_a_task_that_ignores_cancellation_does_not_hold_the_shard(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Serving tasks are cancelled with a bound: a stuck one is named and left, the shard goes on."""

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
    await cancel_all({"reader": stuck, "watchdog": fine})
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


class SlowKafkaSink(FakeSink):
    """A sink whose first record puts the shard over its backpressure mark for ``stall_s``."""

    def __init__(self, stall_s: float) -> None:
        super().__init__()
        self.stall_s = stall_s
        self.drained = asyncio.Event()

    def submit(self, _accepted: Accepted, _channel: str | None) -> None:
        self.pending = MAX_PENDING_RECORDS + 1

    async def drain_to(self, _max_pending_items: int) -> None:
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
        rest=FakeRest(),
        sink=sink,
        state=ShardState(),
        settings=Settings(ping_interval_s=0.2, pong_timeout_s=0.3, backoff_initial_s=0.05),
        socket_factory=new_socket,
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


async def test_frame_counts_reach_the_metric_within_a_watchdog_tick() -> None:
    """A frame is counted in bridge_genesys_events_total by the serving loop's next tick, not per frame."""
    sink = FakeSink()
    sockets: list[PongingSocket] = []

    def new_socket() -> PongingSocket:
        sockets.append(PongingSocket())
        return sockets[-1]

    shard = Shard(
        4,
        ["u1"],
        rest=FakeRest(),
        sink=sink,
        state=ShardState(),
        settings=Settings(),
        socket_factory=new_socket,
    )
    counter = metrics.GENESYS_EVENTS.labels(kind="pong")
    start = counter._value.get()
    task = asyncio.create_task(shard.run())
    try:
        while shard.stats.reconciles < 1 or counter._value.get() < start + 1:  # the confirming ping's
            await asyncio.sleep(0.01)
        before = counter._value.get()
        shard._serving.handle(PONG, shard.channel_id)
        assert counter._value.get() == before, "counted per frame"
        await asyncio.sleep(WATCHDOG_TICK_S * 3)
        assert counter._value.get() == before + 1
    finally:
        await shard.stop()
        await asyncio.wait_for(task, 10)
