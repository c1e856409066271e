"""bridge.backfill: the shard side of the backfill (stale changes, gap records), with fakes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bridge import metrics
from bridge.backfill import REPLAY_GRACE_S, Backfiller
from bridge.events import ShardState
from bridge.genesys.gaps import Cause, Fallback, GapReport
from bridge.model import Change, Kind, Origin, RoutingValue, event_id
from bridge.records import gap_id
from bridge.settings import Settings
from tests.shard_fakes import Clock, FakeSink, NullRest, shard_context

WALL = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def backfiller(settings: Settings, clock: Clock, sink: FakeSink) -> Backfiller:
    ctx = shard_context(NullRest(), clock, lambda: WALL, settings)
    return Backfiller(
        ctx,
        settings=settings,
        state=ShardState(),
        sink=sink,
        write=lambda _change, _channel: None,
        channel=lambda: "ch-now",
    )


def stale_change(seconds: float) -> Change:
    when = WALL - timedelta(seconds=seconds)
    value = RoutingValue("IDLE")
    return Change(
        "u",
        Kind.ROUTING_STATUS,
        when,
        value,
        WALL,
        Origin.STREAM,
        event_id("u", Kind.ROUTING_STATUS, when, value),
    )


def test_a_stale_stream_change_is_written_late_except_around_a_rotation() -> None:
    """Out of order on one channel: written late; while two channels deliver (rotation, grace): not."""
    clock, sink = Clock(), FakeSink()
    shard = backfiller(Settings(), clock, sink)
    shard.stale(stale_change(5), "ch-1")
    assert len(sink.late) == 1
    shard.replacing(Cause.ROTATION.value)
    shard.stale(stale_change(4), "ch-1")
    shard.flowing([])
    clock.now += REPLAY_GRACE_S - 0.1
    shard.stale(stale_change(3), "ch-2")
    assert len(sink.late) == 1
    clock.now += 0.2
    shard.stale(stale_change(2), "ch-2")
    assert [c.changed_at for c in sink.late] == [WALL - timedelta(seconds=5), WALL - timedelta(seconds=2)]


def test_with_backfill_disabled_a_stale_change_is_dropped_as_before() -> None:
    """BRIDGE_BACKFILL_ENABLED=false keeps the reconcile-only behaviour: nothing written late."""
    sink = FakeSink()
    backfiller(Settings(backfill_enabled=False), Clock(), sink).stale(stale_change(5), "ch-1")
    assert sink.late == []


def test_a_gap_report_becomes_a_gap_record_and_an_unrecovered_one_counts_its_fallback() -> None:
    """The record carries the gap's stable id, the channel after it and the counts."""
    sink = FakeSink()
    shard = backfiller(Settings(id="fleet-a"), Clock(), sink)
    before = float(metrics.BACKFILL_FALLBACKS.labels(reason="forbidden")._value.get())
    start, end = WALL - timedelta(seconds=9), WALL - timedelta(seconds=2)
    shard.write_gap(GapReport(Cause.RECONNECT, start, end, 10, 0, 0, False, Fallback.FORBIDDEN))
    (record,) = sink.gaps
    assert record.gap_id == gap_id("fleet-a", 3, start, "reconnect")
    assert (record.shard, record.channel_id, record.agents, record.fallback) == (3, "ch-now", 10, "forbidden")
    assert (record.from_, record.to, record.written_at) == (start, end, WALL)
    assert float(metrics.BACKFILL_FALLBACKS.labels(reason="forbidden")._value.get()) == before + 1


def test_agents_added_while_the_shard_is_in_a_gap_are_backfilled_from_their_own_start() -> None:
    """Added while the stream is down: not subscribed, in no gap of their own; when the stream flows
    again each is backfilled from its own last change (here none: the whole lookback), not from the
    gap's start."""
    clock, sink = Clock(), FakeSink()
    shard = backfiller(Settings(), clock, sink)
    shard.replacing(Cause.HANDOVER.value)  # a gap under way, from now
    shard.unobserved(["new"])
    shard.flowing(["new"])
    idle = RoutingValue("IDLE")
    current = Change("new", Kind.ROUTING_STATUS, WALL, idle, WALL, Origin.RECONCILE, "e-now")
    assert not shard.decisions.offer(current, "ch-now"), "held for its history"
    shard.reconciled(["new"])
    (query,) = shard.decisions.due(clock())
    assert query.users == ("new",)
    assert query.start == WALL - timedelta(seconds=Settings().backfill_max_lookback_s)
