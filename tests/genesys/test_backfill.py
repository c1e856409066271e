"""Sans-I/O backfill decisions: gap windows, hold and release order, completeness, late writes, reports."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from bridge.events import Accepted, ShardState
from bridge.genesys.backfill import Backfill
from bridge.genesys.gaps import (
    DELAYED_RETRY_S,
    HISTORY_MAX_USERS,
    MESSAGE_ONLY_SETTLE_S,
    BackfillConfig,
    Cause,
    Fallback,
    GapReport,
    Outcome,
    QueryResult,
)
from bridge.model import (
    AgentState,
    Change,
    Kind,
    Origin,
    PendingBackfill,
    PresenceValue,
    RoutingValue,
    VersionedPresence,
    VersionedRouting,
    event_id,
)
from bridge.records import Pending

WALL = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
USER = "u-1"
CHANNEL = "ch-after"
HOLD_S = 10.0
CONFIG = BackfillConfig(enabled=True, hold_s=HOLD_S, max_lookback_s=3600.0)
#: History records as the history client turns them into changes.
HISTORY = Origin.BACKFILL


def at(seconds: float) -> datetime:
    return WALL + timedelta(seconds=seconds)


def presence(seconds: float, sp: str, origin: Origin = Origin.STREAM, user: str = USER) -> Change:
    value = PresenceValue(sp, f"def-{sp.lower()}")
    when = at(seconds)
    return Change(user, Kind.PRESENCE, when, value, when, origin, event_id(user, Kind.PRESENCE, when, value))


def routing(seconds: float, status: str, origin: Origin = Origin.STREAM, user: str = USER) -> Change:
    value = RoutingValue(status)
    when = at(seconds)
    return Change(
        user, Kind.ROUTING_STATUS, when, value, when, origin, event_id(user, Kind.ROUTING_STATUS, when, value)
    )


@dataclass
class Topic:
    """The shard's writes as the decisions make them: ordered through a real ShardState."""

    state: ShardState
    records: list[tuple[Change, bool]] = field(default_factory=list)
    reports: list[GapReport] = field(default_factory=list)
    counts: Counter[Outcome] = field(default_factory=Counter)
    marks: Mapping[str, Pending] = field(default_factory=dict)
    """The backfill's :attr:`~Backfill.marks`, as the sink reads them."""
    states: list[tuple[str, PendingBackfill | None]] = field(default_factory=list)
    """State records written: the user and the ``backfill`` field the sink gives it."""
    unmarked: list[str] = field(default_factory=list)

    def write(self, change: Change, channel_id: str | None, /) -> str | None:
        accepted = self.state.apply(change)
        if not isinstance(accepted, Accepted):
            return None
        self.records.append((accepted.change, False))
        user = change.user_id
        self.states.append((user, self.marks[user].pending() if user in self.marks else None))
        return accepted.change.event_id

    def write_late(self, change: Change, /) -> None:
        self.records.append((change, True))

    def write_gap(self, report: GapReport, /) -> None:
        self.reports.append(report)

    def count(self, outcome: Outcome, n: int, /) -> None:
        self.counts[outcome] += n

    def restate(self, user_id: str, /) -> None:
        mark = self.marks[user_id].pending() if user_id in self.marks else None
        if mark is None:
            self.unmarked.append(user_id)
        self.states.append((user_id, mark))

    def times(self) -> list[tuple[str, float, bool]]:
        return [(c.kind.value, (c.changed_at - WALL).total_seconds(), late) for c, late in self.records]


def setup(*changes: Change, config: BackfillConfig = CONFIG) -> tuple[Backfill, Topic]:
    state = ShardState()
    topic = Topic(state)
    for change in changes:
        topic.write(change, "ch-before")
    topic.records.clear()
    topic.states.clear()
    backfill = Backfill(config, topic, channel=lambda: CHANNEL, state_of=state.get)
    topic.marks = backfill.marks
    return backfill, topic


def end_gap(
    backfill: Backfill, topic: Topic, *, start: float = 5.0, end: float = 10.0, now: float = 0.0
) -> None:
    backfill.gap_started(Cause.RECONNECT, at(start))
    backfill.gap_ended(now, at(end), [USER], topic.state.get)


def reconcile(backfill: Backfill, now: float, *current: Change) -> None:
    for change in current:
        backfill.offer(change, CHANNEL)
    backfill.reconciled(now, [USER])


def test_in_gap_transitions_are_written_before_the_held_change_once_history_reaches_the_target() -> None:
    """Held post-gap changes wait for the history; then all is written in time order, none twice."""
    backfill, topic = setup(presence(0, "AVAILABLE"))
    end_gap(backfill, topic)
    assert backfill.active
    assert not backfill.offer(presence(12, "BREAK"), "ch-after")
    reconcile(backfill, 1.0, presence(12, "BREAK", Origin.RECONCILE))
    assert topic.records == []
    (query,) = backfill.due(1.0)
    assert query.users == (USER,) and query.start == at(5)
    lagging = [presence(0, "AVAILABLE", HISTORY), presence(7, "ON_QUEUE", HISTORY)]
    assert backfill.history(1.0, at(13), [USER], {USER: lagging}) is QueryResult.DELAYED
    assert topic.records == [] and backfill.due(1.0) == []
    assert len(backfill.due(1.0 + DELAYED_RETRY_S)) == 1
    caught_up = [*lagging, presence(12, "BREAK", HISTORY)]
    assert backfill.history(3.0, at(15), [USER], {USER: caught_up}) is QueryResult.OK
    assert topic.times() == [("presence", 7.0, False), ("presence", 12.0, False)]
    assert topic.records[0][0].origin is HISTORY and topic.records[1][0].origin is Origin.STREAM
    assert not backfill.active
    assert topic.counts == Counter({Outcome.WRITTEN: 1, Outcome.ALREADY_WRITTEN: 1})
    (report,) = topic.reports
    assert report.recovered and report.backfilled == 1 and report.late == 0 and report.fallback is None
    assert (report.cause, report.start, report.end, report.agents) == (Cause.RECONNECT, at(5), at(10), 1)


def test_an_agent_whose_state_did_not_change_is_released_at_its_reconciliation() -> None:
    """Current state not after since: no history asked, the held changes are written at once."""
    backfill, topic = setup(presence(0, "AVAILABLE"), routing(0, "IDLE"))
    end_gap(backfill, topic)
    backfill.offer(routing(11, "INTERACTING"), "ch-after")
    reconcile(backfill, 1.0, presence(0, "AVAILABLE", Origin.RECONCILE), routing(0, "IDLE", Origin.RECONCILE))
    assert topic.times() == [("routing_status", 11.0, False)]
    assert backfill.due(1.0) == [] and not backfill.active
    assert topic.reports[0].recovered


def test_history_showing_a_change_seen_after_the_gap_is_complete() -> None:
    """A stream change after the gap's end found in history proves the gap itself is covered."""
    backfill, topic = setup(routing(0, "IDLE"))
    end_gap(backfill, topic)
    backfill.offer(routing(11, "INTERACTING"), "ch-after")
    reconcile(backfill, 1.0, routing(13, "IDLE", Origin.RECONCILE))
    backfill.offer(routing(13, "IDLE"), "ch-after")
    history = [
        routing(0, "IDLE", HISTORY),
        routing(6, "OFF_QUEUE", HISTORY),
        routing(11, "INTERACTING", HISTORY),
    ]
    assert backfill.history(1.0, at(14), [USER], {USER: history}) is QueryResult.OK
    expected = [
        ("routing_status", 6.0, False),
        ("routing_status", 11.0, False),
        ("routing_status", 13.0, False),
    ]
    assert topic.times() == expected


def test_held_agents_are_released_at_the_hold_and_their_history_is_written_late() -> None:
    """Past hold_s the held changes are written; history found later is late, and reported recovered."""
    backfill, topic = setup(presence(0, "AVAILABLE"))
    end_gap(backfill, topic, now=100.0)
    reconcile(backfill, 101.0, presence(12, "BREAK", Origin.RECONCILE))
    backfill.offer(presence(14, "ON_QUEUE"), "ch-after")
    backfill.tick(100.0 + HOLD_S - 0.1, at(20))
    assert topic.records == []
    backfill.tick(100.0 + HOLD_S, at(20))
    assert topic.times() == [("presence", 12.0, False), ("presence", 14.0, False)]
    assert backfill.active and topic.reports == []
    history = [
        presence(0, "AVAILABLE", HISTORY),
        presence(7, "MEAL", HISTORY),
        presence(12, "BREAK", HISTORY),
    ]
    (query,) = backfill.due(200.0)
    assert backfill.history(200.0, at(30), query.users, {USER: history}) is QueryResult.OK
    assert topic.times()[2:] == [("presence", 7.0, True)]
    assert topic.counts[Outcome.LATE] == 1
    (report,) = topic.reports
    assert report.recovered and report.backfilled == 1 and report.late == 1


def test_after_the_hold_what_history_already_shows_is_written_late_even_before_it_is_complete() -> None:
    """A released agent's partial history is written late at once; the rest when it catches up."""
    backfill, topic = setup(presence(0, "AVAILABLE"))
    end_gap(backfill, topic)
    reconcile(backfill, 1.0, presence(12, "BREAK", Origin.RECONCILE))
    backfill.tick(HOLD_S, at(20))
    partial = [presence(0, "AVAILABLE", HISTORY), presence(7, "MEAL", HISTORY)]
    assert backfill.history(HOLD_S, at(21), [USER], {USER: partial}) is QueryResult.DELAYED
    full = [*partial, presence(12, "BREAK", HISTORY)]
    backfill.history(HOLD_S + 5, at(26), [USER], {USER: full})
    assert topic.times() == [("presence", 12.0, False), ("presence", 7.0, True)]
    assert not backfill.active


def test_forbidden_history_releases_at_once_reports_unrecovered_then_recovers_late() -> None:
    """A fallback: current state written now, one unrecovered report, then a recovered one later."""
    backfill, topic = setup(presence(0, "AVAILABLE"))
    end_gap(backfill, topic)
    reconcile(backfill, 1.0, presence(12, "BREAK", Origin.RECONCILE))
    assert backfill.failed(1.0, [USER], Fallback.FORBIDDEN)
    assert topic.times() == [("presence", 12.0, False)]
    (first,) = topic.reports
    assert not first.recovered and first.fallback is Fallback.FORBIDDEN
    assert backfill.due(1.5) == []
    (retry,) = backfill.due(100.0)
    assert not backfill.failed(100.0, retry.users, Fallback.FORBIDDEN)
    assert len(topic.reports) == 1
    history = [
        presence(0, "AVAILABLE", HISTORY),
        presence(7, "MEAL", HISTORY),
        presence(12, "BREAK", HISTORY),
    ]
    backfill.history(300.0, at(300), [USER], {USER: history})
    assert topic.times()[1:] == [("presence", 7.0, True)]
    second = topic.reports[1]
    assert second.recovered and second.late == 1 and second.fallback is None
    assert (second.cause, second.start) == (first.cause, first.start)


def test_a_transition_without_a_state_before_counts_from_the_agents_from() -> None:
    """No state of that kind: every transition after from is written; the one before is not."""
    backfill, topic = setup(presence(0, "AVAILABLE"))
    end_gap(backfill, topic)
    reconcile(backfill, 1.0, presence(0, "AVAILABLE", Origin.RECONCILE), routing(8, "IDLE", Origin.RECONCILE))
    history = [
        routing(2, "OFF_QUEUE", HISTORY),
        routing(6, "INTERACTING", HISTORY),
        routing(8, "IDLE", HISTORY),
    ]
    backfill.history(1.0, at(15), [USER], {USER: history})
    assert topic.times() == [("routing_status", 6.0, False), ("routing_status", 8.0, False)]


def test_a_record_split_in_two_is_not_a_transition() -> None:
    """Same value twice in a row (Genesys stores a long state once per day): one change, not two."""
    backfill, topic = setup(presence(0, "AVAILABLE"))
    end_gap(backfill, topic)
    reconcile(backfill, 1.0, presence(9, "MEAL", Origin.RECONCILE))
    history = [
        presence(0, "AVAILABLE", HISTORY),
        presence(6, "AVAILABLE", HISTORY),
        presence(9, "MEAL", HISTORY),
        presence(9, "MEAL", HISTORY),
    ]
    backfill.history(1.0, at(15), [USER], {USER: history})
    assert topic.times() == [("presence", 9.0, False)]


def test_a_message_only_target_is_reached_once_it_is_old_enough() -> None:
    """Analytics starts no interval for a message change: same value and old enough → complete."""
    backfill, topic = setup(presence(0, "AVAILABLE"))
    end_gap(backfill, topic)
    reconcile(backfill, 1.0, presence(9, "BREAK", Origin.RECONCILE))
    history = [presence(0, "AVAILABLE", HISTORY), presence(6, "BREAK", HISTORY)]
    assert backfill.history(1.0, at(15), [USER], {USER: history}) is QueryResult.DELAYED
    assert backfill.history(5.0, at(9 + MESSAGE_ONLY_SETTLE_S), [USER], {USER: history}) is QueryResult.OK
    assert topic.times() == [("presence", 6.0, False), ("presence", 9.0, False)]


def test_a_gap_older_than_the_lookback_is_clamped_and_reported_too_old() -> None:
    """from before to - lookback: the query starts at the lookback, the gap is not recovered."""
    config = BackfillConfig(enabled=True, hold_s=HOLD_S, max_lookback_s=60.0)
    backfill, topic = setup(presence(0, "AVAILABLE"), config=config)
    backfill.gap_started(Cause.TAKEOVER, at(0))
    backfill.gap_ended(0.0, at(100), [USER], topic.state.get)
    reconcile(backfill, 1.0, presence(90, "BREAK", Origin.RECONCILE))
    (query,) = backfill.due(1.0)
    assert query.start == at(40)
    backfill.history(
        1.0, at(101), [USER], {USER: [presence(80, "MEAL", HISTORY), presence(90, "BREAK", HISTORY)]}
    )
    (report,) = topic.reports
    assert not report.recovered and report.fallback is Fallback.TOO_OLD and report.cause is Cause.TAKEOVER
    assert report.start == at(40)


def test_a_gap_ending_while_one_is_backfilled_merges_into_it() -> None:
    """A second gap keeps the first's from and cause; the held changes stay held, one report."""
    backfill, topic = setup(presence(0, "AVAILABLE"))
    end_gap(backfill, topic)
    backfill.offer(presence(11, "BREAK"), "ch-after")
    backfill.gap_started(Cause.HANDOVER, at(12))
    backfill.gap_ended(2.0, at(13), [USER], topic.state.get)
    reconcile(backfill, 3.0, presence(11, "BREAK", Origin.RECONCILE))
    (query,) = backfill.due(3.0)
    assert query.start == at(5)
    history = [
        presence(0, "AVAILABLE", HISTORY),
        presence(7, "MEAL", HISTORY),
        presence(11, "BREAK", HISTORY),
    ]
    backfill.history(3.0, at(20), [USER], {USER: history})
    assert topic.times() == [("presence", 7.0, False), ("presence", 11.0, False)]
    (report,) = topic.reports
    assert (report.cause, report.start, report.end, report.recovered) == (
        Cause.RECONNECT,
        at(5),
        at(13),
        True,
    )


def test_disabled_backfill_holds_nothing() -> None:
    """BRIDGE_BACKFILL_ENABLED=false: no gap is tracked, every change is written at once."""
    backfill, topic = setup(config=BackfillConfig(enabled=False, hold_s=HOLD_S, max_lookback_s=3600.0))
    end_gap(backfill, topic)
    assert not backfill.active
    assert backfill.offer(presence(12, "BREAK"), "ch-after")
    assert topic.reports == []


def test_a_fresh_shard_has_no_gap() -> None:
    """No gap started (nothing was ever written): the first connection holds nothing."""
    backfill, topic = setup()
    backfill.gap_ended(0.0, at(10), [USER], topic.state.get)
    assert not backfill.active and topic.reports == []


def test_added_agents_are_backfilled_from_their_state_or_the_whole_lookback() -> None:
    """Agents added to a running shard: cause resubscribe, from = their state or now - lookback."""
    backfill, topic = setup(presence(50, "AVAILABLE"))
    backfill.gap_ended(
        0.0, at(3600 + 100), [USER, "u-2"], topic.state.get, starts={USER: at(50), "u-2": None}
    )
    assert backfill.held(USER) and backfill.held("u-2")
    for user in (USER, "u-2"):
        backfill.offer(presence(3600 + 99, "BREAK", Origin.RECONCILE, user=user), CHANNEL)
    backfill.reconciled(1.0, [USER, "u-2"])
    (query,) = backfill.due(1.0)
    assert query.start == at(100) and set(query.users) == {USER, "u-2"}


def test_history_queries_name_at_most_a_hundred_agents() -> None:
    """Many pending agents: several queries, each within the userId predicate limit."""
    backfill, topic = setup()
    users = [f"u-{i:03}" for i in range(HISTORY_MAX_USERS + 5)]
    backfill.gap_ended(0.0, at(10), users, topic.state.get, starts=dict.fromkeys(users, at(5)))
    for user in users:
        backfill.offer(presence(9, "BREAK", Origin.RECONCILE, user=user), CHANNEL)
    backfill.reconciled(1.0, users)
    assert [len(q.users) for q in backfill.due(1.0)] == [HISTORY_MAX_USERS, 5]


def test_an_agent_whose_history_never_comes_is_given_up_and_reported_unrecovered() -> None:
    """Past the lookback the retries stop: the gap is reported unrecovered, nothing is held, and the
    agent's state is written once more without its mark (nobody will write that window)."""
    config = BackfillConfig(enabled=True, hold_s=HOLD_S, max_lookback_s=60.0)
    backfill, topic = setup(presence(0, "AVAILABLE"), config=config)
    end_gap(backfill, topic)
    reconcile(backfill, 1.0, presence(12, "BREAK", Origin.RECONCILE))
    backfill.tick(HOLD_S, at(20))
    assert list(backfill.marks) == [USER], "released without its history: marked"
    backfill.tick(HOLD_S + 1, at(10 + 59))
    assert backfill.active
    backfill.tick(HOLD_S + 2, at(10 + 200))
    assert not backfill.active
    assert topic.unmarked == [USER] and backfill.marks == {}
    (report,) = topic.reports
    assert not report.recovered and report.fallback is Fallback.UNAVAILABLE


def test_an_agent_not_reconciled_yet_is_not_given_up_at_the_deadline() -> None:
    """Released at the hold before its current state was read (a slow reconciliation): past the
    deadline it still waits, since its history was never asked for; read, its history is written."""
    config = BackfillConfig(enabled=True, hold_s=HOLD_S, max_lookback_s=60.0)
    backfill, topic = setup(presence(0, "AVAILABLE"), config=config)
    end_gap(backfill, topic)
    backfill.offer(presence(14, "ON_QUEUE"), CHANNEL)
    backfill.tick(HOLD_S, at(20))
    backfill.tick(HOLD_S + 2, at(10 + 200))
    assert backfill.active and topic.reports == []
    reconcile(backfill, HOLD_S + 3, presence(14, "ON_QUEUE", Origin.RECONCILE))
    history = [
        presence(0, "AVAILABLE", HISTORY),
        presence(7, "MEAL", HISTORY),
        presence(14, "ON_QUEUE", HISTORY),
    ]
    (query,) = backfill.due(HOLD_S + 3)
    assert backfill.history(HOLD_S + 3, at(10 + 201), query.users, {USER: history}) is QueryResult.OK
    assert ("presence", 7.0, True) in topic.times() and not backfill.active


def test_agents_that_leave_are_forgotten() -> None:
    """A removed agent's pending backfill is dropped and no longer blocks its gap's report."""
    backfill, topic = setup(presence(0, "AVAILABLE"))
    end_gap(backfill, topic)
    backfill.forget([USER])
    assert not backfill.active and topic.reports[0].agents == 0


def test_stream_changes_of_a_released_agent_count_against_its_late_history() -> None:
    """After release a stream change written normally is not written again as a late transition."""
    backfill, topic = setup(presence(0, "AVAILABLE"))
    end_gap(backfill, topic)
    backfill.tick(HOLD_S, at(20))
    assert backfill.offer(presence(12, "BREAK"), "ch-after")
    reconcile(backfill, HOLD_S + 1, presence(12, "BREAK", Origin.RECONCILE))
    history = [
        presence(0, "AVAILABLE", HISTORY),
        presence(7, "MEAL", HISTORY),
        presence(12, "BREAK", HISTORY),
    ]
    backfill.history(HOLD_S + 1, at(30), [USER], {USER: history})
    assert topic.times() == [("presence", 12.0, False), ("presence", 7.0, True)]
    assert topic.counts[Outcome.ALREADY_WRITTEN] == 1


def test_nothing_at_or_before_the_last_accepted_change_is_written_again() -> None:
    """since is the last accepted change: history up to it is Kafka's already, even inside the window."""
    backfill, topic = setup(routing(6, "IDLE"))
    end_gap(backfill, topic)
    reconcile(backfill, 1.0, routing(9, "INTERACTING", Origin.RECONCILE))
    history = [
        routing(5.5, "OFF_QUEUE", HISTORY),
        routing(6, "IDLE", HISTORY),
        routing(9, "INTERACTING", HISTORY),
    ]
    backfill.history(1.0, at(15), [USER], {USER: history})
    assert topic.times() == [("routing_status", 9.0, False)]


def test_a_final_state_reached_inside_the_gap_is_written_as_backfill_not_reconcile() -> None:
    """History and reconciliation both know the current state: the record says backfill."""
    backfill, topic = setup(presence(0, "AVAILABLE"))
    end_gap(backfill, topic)
    reconcile(backfill, 1.0, presence(8, "MEAL", Origin.RECONCILE))
    history = [presence(0, "AVAILABLE", HISTORY), presence(8, "MEAL", HISTORY)]
    backfill.history(1.0, at(15), [USER], {USER: history})
    assert [(c.origin, late) for c, late in topic.records] == [(Origin.BACKFILL, False)]


def test_a_stale_stream_change_is_new_unless_written_for_its_pending_agent() -> None:
    """Out-of-order delivery: written late once; not again, nor if its backfill already wrote it."""
    backfill, topic = setup(presence(0, "AVAILABLE"))
    assert backfill.unwritten(presence(5, "BREAK", user="u-other"))
    end_gap(backfill, topic)
    backfill.tick(HOLD_S, at(20))
    backfill.offer(presence(12, "BREAK"), CHANNEL)
    assert not backfill.unwritten(presence(12, "BREAK"))
    assert backfill.unwritten(presence(11, "MEAL"))
    assert not backfill.unwritten(presence(11, "MEAL"))


def test_agents_joining_leave_a_gap_under_way_pending() -> None:
    """Agents added while a gap is open are held on their own; the gap still ends for everyone."""
    backfill, topic = setup(presence(0, "AVAILABLE"))
    backfill.gap_started(Cause.HANDOVER, at(5))
    backfill.gap_ended(0.0, at(8), ["u-2"], topic.state.get, starts={"u-2": None}, joined=True)
    assert backfill.held("u-2") and not backfill.held(USER)
    backfill.gap_ended(1.0, at(10), [USER, "u-2"], topic.state.get)
    assert backfill.held(USER)
    for user in (USER, "u-2"):
        backfill.offer(presence(9, "BREAK", Origin.RECONCILE, user=user), CHANNEL)
    backfill.reconciled(2.0, [USER, "u-2"])
    starts = {u: q.start for q in backfill.due(2.0) for u in q.users}
    assert starts == {USER: at(5), "u-2": at(8 - 3600)}


def test_an_agent_observable_again_is_backfilled_from_its_own_last_change() -> None:
    """A per-agent start before the gap's window (its topic was rejected for a while) is kept."""
    backfill, topic = setup(presence(0, "AVAILABLE"))
    backfill.gap_started(Cause.RECONNECT, at(50))
    backfill.gap_ended(0.0, at(60), [USER], topic.state.get, starts={USER: at(0)})
    reconcile(backfill, 1.0, presence(55, "BREAK", Origin.RECONCILE))
    (query,) = backfill.due(1.0)
    assert query.start == at(0)
    history = [
        presence(0, "AVAILABLE", HISTORY),
        presence(20, "MEAL", HISTORY),
        presence(55, "BREAK", HISTORY),
    ]
    backfill.history(1.0, at(70), [USER], {USER: history})
    assert topic.times() == [("presence", 20.0, False), ("presence", 55.0, False)]


def test_an_agent_released_without_its_history_marks_its_states_until_the_history_is_written() -> None:
    """Released at the hold: every state written for it says what is pending (its windows and the
    eventIds written since the gap began); once the history is written, its state once more without."""
    backfill, topic = setup(presence(0, "AVAILABLE"), routing(2, "IDLE"))
    end_gap(backfill, topic, now=100.0)
    reconcile(backfill, 101.0, presence(12, "BREAK", Origin.RECONCILE), routing(2, "IDLE", Origin.RECONCILE))
    backfill.offer(presence(14, "ON_QUEUE"), "ch-after")
    backfill.tick(100.0 + HOLD_S, at(20))
    assert list(backfill.marks) == [USER]
    first, second = (mark for _, mark in topic.states)
    assert first is not None and second is not None
    assert (first.presence_from, first.routing_from, first.end) == (at(0), at(2), at(10))
    assert first.written == ()
    assert second.written == (presence(12, "BREAK").event_id,)
    backfill.offer(routing(15, "INTERACTING"), "ch-after")
    assert topic.states[-1][1] is not None  # still pending: still marked
    history = [
        presence(0, "AVAILABLE", HISTORY),
        presence(7, "MEAL", HISTORY),
        presence(12, "BREAK", HISTORY),
    ]
    backfill.history(200.0, at(30), [USER], {USER: history})
    assert topic.times()[-1] == ("presence", 7.0, True)
    assert topic.unmarked == [USER] and topic.states[-1] == (USER, None)
    assert backfill.marks == {} and not backfill.active


def test_late_transitions_of_a_still_pending_agent_are_named_by_a_new_mark_at_once() -> None:
    """Partial history after the hold is written late; the agent's state is written again with a
    mark naming those transitions, so a new owner would not write them twice."""
    backfill, topic = setup(presence(0, "AVAILABLE"))
    end_gap(backfill, topic)
    reconcile(backfill, 1.0, presence(12, "BREAK", Origin.RECONCILE))
    backfill.tick(HOLD_S, at(20))
    partial = [presence(0, "AVAILABLE", HISTORY), presence(7, "MEAL", HISTORY)]
    assert backfill.history(HOLD_S, at(21), [USER], {USER: partial}) is QueryResult.DELAYED
    assert topic.times()[-1] == ("presence", 7.0, True)
    user, mark = topic.states[-1]
    assert user == USER and mark is not None and presence(7, "MEAL").event_id in mark.written
    backfill.history(HOLD_S + 5, at(26), [USER], {USER: [*partial, presence(12, "BREAK", HISTORY)]})
    assert topic.states[-1] == (USER, None) and topic.unmarked == [USER]


def test_an_agent_whose_history_came_in_time_is_never_marked() -> None:
    """The ordinary path (history before the hold) writes no marks and no extra state."""
    backfill, topic = setup(presence(0, "AVAILABLE"))
    end_gap(backfill, topic)
    reconcile(backfill, 1.0, presence(12, "BREAK", Origin.RECONCILE))
    backfill.history(
        1.0, at(13), [USER], {USER: [presence(0, "AVAILABLE", HISTORY), presence(12, "BREAK", HISTORY)]}
    )
    assert [mark for _, mark in topic.states] == [None] and topic.unmarked == []


def marked_state(written: tuple[str, ...]) -> AgentState:
    """What a writer killed before its late retry left: the reconciled BREAK at 12 and IDLE at 9,
    marked with the windows it had (presence from 0, routing status from 2)."""
    brk = presence(12, "BREAK", Origin.RECONCILE)
    state = AgentState(USER, VersionedPresence(brk.value, brk.changed_at, brk.event_id))
    idle = routing(9, "IDLE", Origin.RECONCILE)
    state.routing = VersionedRouting(RoutingValue("IDLE"), idle.changed_at, idle.event_id)
    state.pending = PendingBackfill(at(0), at(2), at(10), written)
    return state


def test_a_new_owner_backfills_the_window_a_marked_state_names_and_skips_what_was_written() -> None:
    """Takeover of a marked agent: history from the writer's window, not the state's time; the
    transitions the writer wrote (named in the mark) are not written again; then the mark goes."""
    backfill, topic = setup()
    written_on_stream = presence(11, "ON_QUEUE")
    topic.state.load({USER: marked_state((written_on_stream.event_id,))})
    backfill.gap_started(Cause.TAKEOVER, at(12))
    backfill.gap_ended(0.0, at(30), [USER], topic.state.get, {USER: at(0)})
    assert list(backfill.marks) == [USER]
    reconcile(backfill, 1.0, presence(12, "BREAK", Origin.RECONCILE), routing(9, "IDLE", Origin.RECONCILE))
    (query,) = backfill.due(1.0)
    assert query.start == at(0)
    history = [
        presence(0, "AVAILABLE", HISTORY),
        presence(7, "MEAL", HISTORY),
        presence(11, "ON_QUEUE", HISTORY),
        presence(12, "BREAK", HISTORY),
        routing(2, "IDLE", HISTORY),
        routing(5, "INTERACTING", HISTORY),
        routing(9, "IDLE", HISTORY),
    ]
    assert backfill.history(1.0, at(31), [USER], {USER: history}) is QueryResult.OK
    assert sorted(topic.times()) == [
        ("presence", 7.0, True),
        ("routing_status", 5.0, True),
    ]
    assert topic.unmarked == [USER] and backfill.marks == {} and not backfill.active
    assert topic.reports[0].recovered and topic.reports[0].late == 2


def test_a_new_owner_released_without_history_passes_the_inherited_mark_on() -> None:
    """The new owner's history fails too: its own state records carry the inherited window."""
    backfill, topic = setup()
    topic.state.load({USER: marked_state(("e-old",))})
    backfill.gap_started(Cause.TAKEOVER, at(12))
    backfill.gap_ended(0.0, at(30), [USER], topic.state.get, {USER: at(0)})
    reconcile(backfill, 1.0, presence(31, "AWAY", Origin.RECONCILE))
    backfill.failed(1.0, [USER], Fallback.UNAVAILABLE)
    ((_, mark),) = topic.states
    assert mark is not None and (mark.presence_from, mark.routing_from) == (at(0), at(2))
    assert "e-old" in mark.written and presence(12, "BREAK", Origin.RECONCILE).event_id in mark.written


def test_a_history_answer_from_before_a_merged_gap_does_not_close_the_new_gap() -> None:
    """Seed 703: an agent fell back (history 429s) and its background retry was out when a second gap
    merged into the first. The retry's answer reached the first gap's target and closed the agent, so
    the second gap's reconciled state was written at once and its in-gap transition was never read.
    An answer to a query sent before the agent was re-armed is not the agent's: neither its success
    nor its failure counts, and the query after the new reconciliation writes the transition in order."""
    backfill, topic = setup(routing(0, "IDLE"))
    end_gap(backfill, topic)
    reconcile(backfill, 1.0, routing(8, "NOT_RESPONDING", Origin.RECONCILE))
    (first,) = backfill.due(1.0)
    backfill.failed(1.0, first.users, Fallback.UNAVAILABLE, start=first.start)
    (retry,) = backfill.due(61.0)  # in flight while the second gap comes and goes
    backfill.gap_started(Cause.RECONNECT, at(12))
    backfill.gap_ended(61.0, at(20), [USER], topic.state.get)
    before_merge = [routing(0, "IDLE", HISTORY), routing(8, "NOT_RESPONDING", HISTORY)]
    backfill.history(61.5, at(21), retry.users, {USER: before_merge}, start=retry.start)
    assert backfill.failed(61.5, retry.users, Fallback.UNAVAILABLE, start=retry.start) is False
    assert backfill.held(USER), "still held for the merged gap"
    reconcile(backfill, 62.0, routing(18, "IDLE", Origin.RECONCILE))
    assert topic.times() == [("routing_status", 8.0, False)], "the reconciled state waits"
    (query,) = backfill.due(62.0)
    assert query.start == at(5), "the merged window, from the first gap's start"
    history = [*before_merge, routing(15, "INTERACTING", HISTORY), routing(18, "IDLE", HISTORY)]
    assert backfill.history(62.5, at(25), query.users, {USER: history}, start=query.start) is QueryResult.OK
    assert topic.times() == [
        ("routing_status", 8.0, False),
        ("routing_status", 15.0, False),
        ("routing_status", 18.0, False),
    ]
    assert not backfill.active and topic.reports[-1].recovered


def test_a_change_the_new_channel_delivered_before_the_gap_ended_hides_nothing_of_the_gap() -> None:
    """Seeds 932 and 933: in a rotation the new channel delivers an agent's INTERACTING while it
    subscribes, before the gap ends; the IDLE 1 ms before it was lost with the old channel. The
    backfill starts from the state before the gap (not the INTERACTING), so the IDLE is written
    (late: the agent's state is already newer), and the INTERACTING is not written again."""
    backfill, topic = setup(presence(0, "OFFLINE"), routing(0, "OFF_QUEUE"))
    backfill.gap_started(Cause.ROTATION, at(5))
    assert backfill.active, "offers go through the decisions while the gap is open"
    assert backfill.offer(routing(9.6, "INTERACTING"), "ch-new")  # written at once: no gap ended yet
    # Its state record says what may be missing: a new owner taking over now backfills from there.
    assert topic.states == [(USER, PendingBackfill(at(0), at(0), at(5), ()))]
    backfill.gap_ended(0.0, at(10), [USER], topic.state.get)
    reconcile(
        backfill,
        1.0,
        presence(8.7, "ON_QUEUE", Origin.RECONCILE),
        routing(9.6, "INTERACTING", Origin.RECONCILE),
    )
    history = [
        presence(0, "OFFLINE", HISTORY),
        presence(8.7, "ON_QUEUE", HISTORY),
        routing(0, "OFF_QUEUE", HISTORY),
        routing(8.75, "IDLE", HISTORY),
        routing(9.6, "INTERACTING", HISTORY),
    ]
    (query,) = backfill.due(1.0)
    assert backfill.history(1.0, at(20), query.users, {USER: history}, start=query.start) is QueryResult.OK
    assert topic.times() == [
        ("routing_status", 9.6, False),
        ("presence", 8.7, False),
        ("routing_status", 8.75, True),
    ]
    ids = [c.event_id for c, _late in topic.records]
    assert len(ids) == len(set(ids)), "nothing written twice"
    assert not backfill.active
    assert topic.unmarked == [USER], "once backfilled, its state is written without the mark"


def test_changes_written_before_a_gap_opened_are_not_written_again() -> None:
    """Only changes written while the gap is open move its start back: a change accepted before
    gap_started stays the agent's since (its history up to it is in Kafka already)."""
    backfill, topic = setup(routing(0, "OFF_QUEUE"))
    assert not backfill.active
    topic.write(routing(4, "IDLE"), "ch-old")
    end_gap(backfill, topic)
    reconcile(backfill, 1.0, routing(4, "IDLE", Origin.RECONCILE))
    assert topic.times() == [("routing_status", 4.0, False)]
    assert not backfill.active, "nothing new since the last change: released at once"
