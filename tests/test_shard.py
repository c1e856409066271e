"""bridge.shard with fakes: lifecycle parts that need no socket, and a fake Genesys REST + socket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bridge import metrics
from bridge.errors import DeliveryError, GenesysError, SinkError
from bridge.events import Accepted, ShardState
from bridge.genesys.history import Interval, UserHistory
from bridge.genesys.models import ChannelInfo, SubscriptionResult
from bridge.genesys.protocol import user_topic
from bridge.model import (
    AgentState,
    Change,
    Kind,
    Origin,
    PendingBackfill,
    RoutingValue,
    VersionedRouting,
    event_id,
)
from bridge.settings import Settings
from bridge.shard import Shard
from tests.shard_fakes import FakeRest, FakeSink, FakeSocket, NullRest, StreamSink


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
        rest=NullRest(),
        sink=sink,
        state=ShardState(),
        settings=Settings(),
        socket_factory=FakeSocket,
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
        rest=NullRest(),
        sink=sink,
        state=ShardState(),
        settings=Settings(),
        socket_factory=FakeSocket,
    )
    assert not shard.ready
    shard._connected = True
    assert shard.ready


def test_the_sweep_is_on_by_default_and_reads_only_a_connected_shard() -> None:
    """Each shard has a sweep unless BRIDGE_SWEEP_INTERVAL_S is 0; it reads only while ready."""

    def shard(settings: Settings) -> Shard:
        return Shard(
            3,
            ["a"],
            rest=NullRest(),
            sink=FakeSink(),
            state=ShardState(),
            settings=settings,
            socket_factory=FakeSocket,
        )

    on = shard(Settings())
    assert on.sweep is not None and on.sweep.interval_s == Settings().sweep_interval_s == 900.0
    assert not on._sweepable()
    on._connected, on._link.subscriptions.subscribed = True, 1
    assert on._sweepable()
    assert shard(Settings(sweep_interval_s=0)).sweep is None


def serving_shard(
    rest: FakeRest, users: list[str], sockets: list[FakeSocket], settings: Settings | None = None
) -> Shard:
    def factory() -> FakeSocket:
        sockets.append(FakeSocket())
        return sockets[-1]

    return Shard(
        7,
        users,
        rest=rest,
        sink=StreamSink(),
        state=ShardState(),
        settings=settings or Settings(),
        socket_factory=factory,
    )


async def until(check: Any, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.01)


def _rotations(reason: str) -> float:
    return float(metrics.CHANNEL_ROTATIONS.labels(reason=reason)._value.get())


@pytest.mark.parametrize(
    ("topic_type", "invalidated"),
    [("no_longer_subscribed", 0), ("subscription_changed", 0), ("token_revoked", 1)],
)
async def test_system_message_moves_the_shard_to_a_new_channel(topic_type: str, invalidated: int) -> None:
    """A lost-subscription system message: new channel subscribed and connected, old one released."""
    rest = FakeRest()
    sockets: list[FakeSocket] = []
    shard = serving_shard(rest, ["a", "b"], sockets)
    before = _rotations(topic_type)
    task = asyncio.create_task(shard.run())
    await until(lambda: shard.ready)
    body = {"channelId": "ch-1", "systemTopicType": topic_type}
    sockets[0].frames.put_nowait(json.dumps({"topicName": f"v2.system.{topic_type}", "eventBody": body}))
    await until(lambda: shard.channel_id == "ch-2" and shard.ready)
    assert _rotations(topic_type) == before + 1
    assert rest.topics["ch-2"] == [user_topic("a"), user_topic("b")] and rest.deleted == ["ch-1"]
    assert sockets[-1].uri == "wss://streaming.test/channels/ch-2" and sockets[0].closed
    assert rest.invalidated == invalidated
    await until(lambda: shard.stats.reconciles >= 2)
    await shard.stop()
    await task


async def test_the_connected_event_is_set_on_every_connection() -> None:
    """Shard.connected is set once connected and subscribed, and again after reconnecting to a new channel."""
    rest = FakeRest()
    sockets: list[FakeSocket] = []
    shard = serving_shard(rest, ["a"], sockets, Settings(backoff_initial_s=0.05, backoff_max_s=0.1))
    assert not shard.connected.is_set()
    task = asyncio.create_task(shard.run())
    await asyncio.wait_for(shard.connected.wait(), 5)
    assert shard.stats.last_connected is not None and shard.channel_id == "ch-1"
    shard.connected.clear()
    sockets[0].frames.put_nowait('{"result": "404", "message": "channel not found"}')
    await asyncio.wait_for(shard.connected.wait(), 5)
    assert shard.channel_id == "ch-2" and shard.ready
    await shard.stop()
    await task


async def test_a_system_message_naming_another_channel_is_ignored() -> None:
    """A lost-subscription message about a channel other than the current one changes nothing."""
    rest = FakeRest()
    sockets: list[FakeSocket] = []
    shard = serving_shard(rest, ["a"], sockets)
    task = asyncio.create_task(shard.run())
    await until(lambda: shard.ready)
    body = {"channelId": "ch-0", "systemTopicType": "no_longer_subscribed"}
    sockets[0].frames.put_nowait(
        json.dumps({"topicName": "v2.system.no_longer_subscribed", "eventBody": body})
    )
    await asyncio.sleep(0.2)
    assert shard.channel_id == "ch-1" and rest.channels == ["ch-1"]
    await shard.stop()
    await task


async def test_rejected_topics_are_not_subscribed_and_are_reported(caplog: pytest.LogCaptureFixture) -> None:
    """Rejected agents: not counted, gauged by reason, named with permissions; POST counts the channel."""
    rest = FakeRest(rejected={user_topic("b"): "Missing permissions", user_topic("d"): "Missing permissions"})
    sockets: list[FakeSocket] = []
    shard = serving_shard(rest, ["a", "b", "c"], sockets)
    task = asyncio.create_task(shard.run())
    await until(lambda: shard.ready)
    assert shard.describe()["subscribed"] == 2 and shard.describe()["unobservable"] == ["b"]
    gauge = metrics.SUBSCRIPTION_REJECTED_TOPICS.labels(shard="7", reason="missing_permissions")
    assert gauge._value.get() == 1
    assert "b (reasons: Missing permissions; missing permissions: x:y:view)" in caplog.text
    await shard.set_users(["a", "b", "c", "d", "e"])
    assert shard.describe()["subscribed"] == 3, "the POST reply lists the whole channel: a, c, e"
    assert sorted(shard.unobservable) == ["b", "d"] and gauge._value.get() == 2
    assert caplog.text.count("x:y:view") == 2, "b named once, then d once; not b again"
    await shard.set_users(["a", "c"])
    assert shard.unobservable == {} and gauge._value.get() == 0
    await shard.stop()
    await task


async def test_repeated_lost_subscription_messages_are_paced(caplog: pytest.LogCaptureFixture) -> None:
    """A second lost-subscription message soon after the first still rotates, after a backoff."""
    rest = FakeRest()
    sockets: list[FakeSocket] = []
    shard = serving_shard(rest, ["a"], sockets, Settings(backoff_initial_s=0.05, backoff_max_s=0.1))
    task = asyncio.create_task(shard.run())
    await until(lambda: shard.ready)
    frame = json.dumps({"topicName": "v2.system.no_longer_subscribed", "eventBody": {}})
    sockets[0].frames.put_nowait(frame)
    await until(lambda: shard.channel_id == "ch-2" and shard.ready)
    assert "waiting" not in caplog.text, "a lone message rotates at once"
    sockets[-1].frames.put_nowait(frame)
    await until(lambda: shard.channel_id == "ch-3" and shard.ready)
    assert "another lost-subscription message within" in caplog.text
    await shard.stop()
    await task


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
        rest=NullRest(),
        sink=sink,
        state=ShardState(),
        settings=Settings(),
        socket_factory=FakeSocket,
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
        rest=NullRest(),
        sink=sink,
        state=ShardState(),
        settings=Settings(),
        socket_factory=FakeSocket,
        find_orphans=orphans,
    )
    await shard.stop()
    await shard.run()
    assert sink.tombstones == ["gone"]


def test_dropped_stream_changes_are_counted_and_reconciliation_repeats_are_not() -> None:
    """A stale or duplicate stream change counts bridge_stale_events_total{kind}; an unchanged state
    found by reconciliation is dropped silently, and neither reaches the sink."""
    sink = FakeSink()
    shard = Shard(
        3,
        ["u-1"],
        rest=NullRest(),
        sink=sink,
        state=ShardState(),
        settings=Settings(),
        socket_factory=FakeSocket,
    )
    at = datetime(2026, 5, 1, 9, tzinfo=UTC)

    def change(when: datetime, origin: Origin) -> Change:
        return Change("u-1", Kind.ROUTING_STATUS, when, RoutingValue("IDLE"), when, origin)

    stale = metrics.STALE_EVENTS.labels(kind=Kind.ROUTING_STATUS.value)
    assert shard._accept(change(at, Origin.STREAM), None)
    before = stale._value.get()
    assert not shard._accept(change(at, Origin.RECONCILE), None)
    assert stale._value.get() == before
    assert not shard._accept(change(at, Origin.STREAM), None)
    assert not shard._accept(change(at - timedelta(seconds=1), Origin.STREAM), None)
    assert stale._value.get() == before + 2
    assert sink.submitted == ["u-1"]


class FailingRest(NullRest):
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
        rest=rest,
        sink=sink,
        state=ShardState(),
        settings=Settings(backoff_initial_s=0.01, backoff_max_s=0.01),
        socket_factory=FakeSocket,
    )
    sink.error = DeliveryError("shard 0: fatal Kafka error during commit")
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
        rest=NullRest(),
        sink=sink,
        state=ShardState(),
        settings=Settings(),
        socket_factory=FakeSocket,
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


class SubscribingRest(NullRest):
    """A Genesys that records subscription calls; a PUT can be held open, a POST can fail."""

    def __init__(self) -> None:
        self.puts: list[list[str]] = []
        self.posts: list[list[str]] = []
        self.hold_put: asyncio.Event | None = None
        self.put_started = asyncio.Event()
        self.fail_post = False
        self.current: list[Change] = []
        self.subscribed: list[str] = []

    async def create_channel(self) -> ChannelInfo:
        return CHANNEL

    async def put_subscriptions(
        self, _channel: str, topics: Sequence[str], ignore_errors: bool = False
    ) -> SubscriptionResult:
        self.puts.append(list(topics))
        self.put_started.set()
        hold, self.hold_put = self.hold_put, None
        if hold is not None:
            await hold.wait()
        self.subscribed = list(topics)
        return SubscriptionResult(permitted=tuple(self.subscribed), rejected=())

    async def post_subscriptions(
        self, _channel: str, topics: Sequence[str], ignore_errors: bool = False
    ) -> SubscriptionResult:
        self.posts.append(list(topics))
        if self.fail_post:
            raise GenesysError("service unavailable", status=503)
        # Like Genesys, the reply lists the whole channel.
        self.subscribed = [*self.subscribed, *topics]
        return SubscriptionResult(permitted=tuple(self.subscribed), rejected=())

    async def current_changes(self, user_ids: Sequence[str], *, observed_at: datetime) -> list[Change]:
        return [c for c in self.current if c.user_id in user_ids]


class IdleSocket:
    """A socket that connects and never delivers a frame."""

    async def connect(self, _uri: str) -> None:
        return None

    async def recv(self) -> str:
        await asyncio.Event().wait()
        raise AssertionError("never delivers")

    async def send(self, _text: str) -> None:
        return None

    async def close(self) -> None:
        return None


def _shard(rest: SubscribingRest, sink: FakeSink, users: list[str], **kwargs: Any) -> Shard:
    return Shard(
        0,
        users,
        rest=rest,
        sink=sink,
        state=ShardState(),
        settings=Settings(),
        socket_factory=IdleSocket,
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
    assert isinstance(known.apply(routing("b")), Accepted)
    loads: list[list[str]] = []

    async def load(users: Sequence[str]) -> Mapping[str, AgentState]:
        loads.append(list(users))
        state = known.get("b")
        assert state is not None
        return {"b": state} if "b" in users else {}

    shard = _shard(rest, sink, ["a"], load_states=load)
    shard._members.loaded = True
    await shard._connect("start")
    rest.current = [routing("b")]
    await shard.set_users(["a", "b"])
    shard._set_disconnected()
    assert loads == [["b"]]
    assert sink.submitted == []


class TakeoverRest(FakeRest):
    """Genesys after the previous owner stopped: agent a moved on twice since its last written state."""

    def __init__(self, at: datetime) -> None:
        super().__init__()
        self.at = at
        self.history = [
            UserHistory(
                "a",
                [],
                [
                    Interval(at, at + timedelta(seconds=10), RoutingValue("IDLE")),
                    # Before the newest loaded change (b's): the previous owner stopped inside a
                    # gap of its own, so only a's own last change tells that this is missing.
                    Interval(
                        at + timedelta(seconds=10), at + timedelta(seconds=15), RoutingValue("NOT_RESPONDING")
                    ),
                    Interval(at + timedelta(seconds=15), at + timedelta(seconds=40), RoutingValue("IDLE")),
                    Interval(
                        at + timedelta(seconds=40), at + timedelta(seconds=50), RoutingValue("OFF_QUEUE")
                    ),
                    Interval(at + timedelta(seconds=50), None, RoutingValue("INTERACTING")),
                ],
            )
        ]

    async def current_changes(self, users: Sequence[str], *, observed_at: datetime) -> list[Any]:
        when = self.at + timedelta(seconds=50)
        value = RoutingValue("INTERACTING")
        return [Change("a", Kind.ROUTING_STATUS, when, value, observed_at, Origin.RECONCILE)]


def _loaded(
    rest: NullRest,
    sink: FakeSink,
    users: list[str],
    states: Mapping[str, AgentState],
    *,
    state: ShardState | None = None,
    settings: Settings | None = None,
) -> Shard:
    """A shard whose members' last states load as ``states`` (a start or takeover)."""

    async def load(wanted: Sequence[str]) -> Mapping[str, AgentState]:
        return {u: states[u] for u in wanted if u in states}

    return Shard(
        4,
        users,
        rest=rest,
        sink=sink,
        state=ShardState() if state is None else state,
        settings=settings or Settings(),
        socket_factory=FakeSocket,
        load_states=load,
    )


class ChangeSink(FakeSink):
    """Keeps the changes written, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.changes: list[Change] = []

    def submit(self, accepted: Accepted, channel_id: str | None) -> None:
        self.changes.append(accepted.change)


async def test_a_shard_started_on_loaded_states_backfills_each_agent_from_its_own_last_change() -> None:
    """Takeover: each agent's history is read from its own loaded changedAt (minus 1 s): the previous
    owner may have stopped inside a gap it had not backfilled yet. What it never wrote is written as
    backfill, in order, and the gap is recorded as a recovered takeover."""
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)

    def routing(at: datetime) -> AgentState:
        return AgentState("x", routing=VersionedRouting(RoutingValue("IDLE"), at, "e"))

    states = {"a": routing(t0), "b": routing(t0 + timedelta(seconds=30))}

    rest, sink = TakeoverRest(t0), ChangeSink()
    shard = _loaded(rest, sink, ["a", "b"], states)
    task = asyncio.create_task(shard.run())
    await until(lambda: bool(sink.gaps))
    # One query (the starts are 30 s apart), from agent a's own last change.
    assert [q[1] for q in rest.history_queries] == [t0 - timedelta(seconds=1)]
    assert [(c.changed_at - t0, c.origin) for c in sink.changes] == [
        (timedelta(seconds=10), Origin.BACKFILL),
        (timedelta(seconds=15), Origin.BACKFILL),
        (timedelta(seconds=40), Origin.BACKFILL),
        (timedelta(seconds=50), Origin.BACKFILL),
    ]
    (gap,) = sink.gaps
    assert (gap.cause, gap.recovered, gap.backfilled, gap.agents) == ("takeover", True, 4, 2)
    await shard.stop()
    await task


async def test_a_marked_loaded_state_is_backfilled_from_its_writers_window_without_repeats() -> None:
    """Takeover of an agent its previous owner had released without history (then it was killed):
    the state says so, and the new owner reads the history from that window, not from the state's
    changedAt, writes late what is missing, skips what the mark says was written, and unmarks it."""
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)

    def rid(seconds: int, status: str) -> str:
        return event_id("a", Kind.ROUTING_STATUS, t0 + timedelta(seconds=seconds), RoutingValue(status))

    current = VersionedRouting(
        RoutingValue("INTERACTING"), t0 + timedelta(seconds=50), rid(50, "INTERACTING")
    )
    marked = AgentState("a", routing=current)
    marked.pending = PendingBackfill(t0, t0, t0 + timedelta(seconds=45), (rid(40, "OFF_QUEUE"),))

    rest, sink = TakeoverRest(t0), ChangeSink()
    shard = _loaded(rest, sink, ["a"], {"a": marked})
    task = asyncio.create_task(shard.run())
    await until(lambda: bool(sink.gaps))
    assert [q[1] for q in rest.history_queries] == [t0 - timedelta(seconds=1)]
    assert sink.changes == []
    assert [(c.changed_at - t0, c.value) for c in sink.late] == [
        (timedelta(seconds=10), RoutingValue("NOT_RESPONDING")),
        (timedelta(seconds=15), RoutingValue("IDLE")),
    ]
    assert [s.user_id for s in sink.states] == ["a"] and sink.states[0].pending is None
    (gap,) = sink.gaps
    assert (gap.cause, gap.recovered, gap.backfilled, gap.late) == ("takeover", True, 2, 2)
    await shard.stop()
    await task


class SweepRest(FakeRest):
    """Genesys for an agent whose two routing changes the stream lost: the sweep reads the second."""

    def __init__(self, at: datetime) -> None:
        super().__init__()
        self.at = at
        self.current = Change("a", Kind.ROUTING_STATUS, at, RoutingValue("IDLE"), at, Origin.RECONCILE)

    async def current_changes(self, users: Sequence[str], *, observed_at: datetime) -> list[Any]:
        c = self.current
        return [Change(c.user_id, c.kind, c.changed_at, c.value, observed_at, Origin.RECONCILE)]


async def test_a_sweep_correction_backfills_what_the_stream_lost_before_it() -> None:
    """The sweep finds a's routing changed with no frame for it: the transition before it comes from
    history first (origin backfill), then the corrected state, and a gap record says cause sweep."""
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)
    state = AgentState("a", routing=VersionedRouting(RoutingValue("IDLE"), t0, "e"))

    rest, sink = SweepRest(t0), ChangeSink()
    shard = _loaded(rest, sink, ["a"], {"a": state}, settings=Settings(sweep_interval_s=3600))
    task = asyncio.create_task(shard.run())
    await until(lambda: shard.ready and bool(sink.gaps) and not shard._decisions.active)
    assert sink.changes == []  # the start's takeover gap found nothing new
    later, lost = t0 + timedelta(seconds=50), t0 + timedelta(seconds=20)
    interacting = RoutingValue("INTERACTING")
    rest.current = Change("a", Kind.ROUTING_STATUS, later, interacting, later, Origin.RECONCILE)
    rest.history = [
        UserHistory(
            "a",
            [],
            [
                Interval(t0, lost, RoutingValue("IDLE")),
                Interval(lost, later, RoutingValue("NOT_RESPONDING")),
                Interval(later, None, RoutingValue("INTERACTING")),
            ],
        )
    ]
    assert shard.sweep is not None
    assert await shard.sweep.sweep_batch(["a"]) == ["a"]
    await until(lambda: len(sink.gaps) == 2)
    assert [(c.changed_at - t0, c.value, c.origin) for c in sink.changes] == [
        (timedelta(seconds=20), RoutingValue("NOT_RESPONDING"), Origin.BACKFILL),
        (timedelta(seconds=50), RoutingValue("INTERACTING"), Origin.BACKFILL),
    ]
    assert rest.history_queries[-1][1] == t0 - timedelta(seconds=1)
    gap = sink.gaps[-1]
    assert (gap.cause, gap.recovered, gap.backfilled, gap.agents) == ("sweep", True, 2, 1)
    await shard.stop()
    await task


class LeavingSink(ChangeSink):
    """Changes and tombstones in the order they were submitted."""

    def __init__(self) -> None:
        super().__init__()
        self.order: list[str] = []

    def submit(self, accepted: Accepted, channel_id: str | None) -> None:
        super().submit(accepted, channel_id)
        self.order.append(f"change {accepted.change.user_id}")

    def submit_tombstone(self, user_id: str) -> None:
        super().submit_tombstone(user_id)
        self.order.append(f"tombstone {user_id}")


async def test_an_agent_removed_from_the_roster_gets_its_history_before_its_tombstone() -> None:
    """Agent a leaves the roster after a change Kafka never got (its shard was down then): the
    change is written from history first (origin backfill), then the tombstone."""
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)
    state = AgentState("a", routing=VersionedRouting(RoutingValue("IDLE"), t0, "e"))

    rest, sink = SweepRest(t0), LeavingSink()
    shard = _loaded(rest, sink, ["a", "b"], {"a": state})
    task = asyncio.create_task(shard.run())
    await until(lambda: shard.ready and bool(sink.gaps) and not shard._decisions.active)
    lost = t0 + timedelta(seconds=20)
    rest.history = [
        UserHistory(
            "a",
            [],
            [Interval(t0, lost, RoutingValue("IDLE")), Interval(lost, None, RoutingValue("OFF_QUEUE"))],
        )
    ]
    await shard.set_users(["b"])
    assert [(c.user_id, c.changed_at - t0, c.origin) for c in sink.changes] == [
        ("a", timedelta(seconds=20), Origin.BACKFILL)
    ]
    assert sink.order == ["change a", "tombstone a"]
    await shard.stop()
    await task


async def test_while_a_ping_is_out_only_the_streams_changes_wait_for_its_pong() -> None:
    """A REST read cannot be lost in a stall: the reconciliation's states go to the backfill at once
    (so its agents know their target), while the stream's wait for the pong."""
    sink = ChangeSink()
    shard = _loaded(NullRest(), sink, ["a"], {})
    at = datetime.now(UTC).replace(microsecond=0)
    stream = Change("a", Kind.ROUTING_STATUS, at, RoutingValue("IDLE"), at, Origin.STREAM)
    read = Change("a", Kind.ROUTING_STATUS, at, RoutingValue("INTERACTING"), at, Origin.RECONCILE)
    shard._backfill.pinging(True)
    assert shard._accept(stream, "ch") and shard._accept(read, "ch")
    assert shard._backfill.suspect == [(stream, "ch")]
    assert [(c.value, c.origin) for c in sink.changes] == [(read.value, Origin.RECONCILE)]


@pytest.mark.parametrize(("began_s", "fleet_seen"), [(180.0, True), (5.0, False), (None, False)])
async def test_a_new_shard_of_new_agents_backfills_them_since_the_fleet_began(
    began_s: float | None, fleet_seen: bool
) -> None:
    """No member has a state. The fleet has written states of other agents for minutes (the map
    grew): what these did since the fleet's oldest state is read, as for agents added. Nothing in
    the topic, or states seconds old (the fleet's first start): nothing is backfilled, nothing held."""
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)

    rest, sink, state = TakeoverRest(t0), ChangeSink(), ShardState()
    began = None if began_s is None else datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=began_s)
    state.fleet_since = began
    shard = _loaded(rest, sink, ["a"], {}, state=state)
    task = asyncio.create_task(shard.run())
    if fleet_seen:
        await until(lambda: bool(sink.gaps))
        assert began is not None
        assert [q[1] for q in rest.history_queries] == [began - timedelta(seconds=1)]
        assert [c.origin for c in sink.changes] == [Origin.BACKFILL] * 5
    else:
        await until(lambda: bool(sink.changes))
        await asyncio.sleep(0.3)
        assert rest.history_queries == [] and sink.gaps == []
        assert [c.origin for c in sink.changes] == [Origin.RECONCILE]
    await shard.stop()
    await task
