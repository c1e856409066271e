"""bridge.events: per-user ordering by Genesys time, dedupe, enrichment, snapshots."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.events import UNKNOWN_TIMESTAMP_STEP, Accepted, Dropped, ShardState
from bridge.model import (
    AgentState,
    Change,
    Kind,
    Origin,
    PresenceValue,
    RoutingValue,
    VersionedRouting,
    event_id,
)

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
USER = "u-1"


def presence(
    at: datetime,
    sp: str = "AVAILABLE",
    def_id: str | None = "d-avail",
    *,
    known: bool = True,
    user: str = USER,
) -> Change:
    value = PresenceValue(sp, def_id, source="PURECLOUD", primary=True)
    return Change(
        user_id=user,
        kind=Kind.PRESENCE,
        changed_at=at,
        value=value,
        observed_at=at,
        origin=Origin.STREAM,
        event_id=event_id(user, Kind.PRESENCE, at, value),
        timestamp_known=known,
    )


def routing(at: datetime, status: str = "IDLE", *, known: bool = True, user: str = USER) -> Change:
    value = RoutingValue(status)
    return Change(
        user_id=user,
        kind=Kind.ROUTING_STATUS,
        changed_at=at,
        value=value,
        observed_at=at,
        origin=Origin.STREAM,
        event_id=event_id(user, Kind.ROUTING_STATUS, at, value) if known else "",
        timestamp_known=known,
    )


def ms(n: int) -> timedelta:
    return timedelta(milliseconds=n)


def test_first_change_is_accepted_with_a_snapshot() -> None:
    """The first change of a user is accepted and carries the user's new state."""
    state = ShardState()
    got = state.apply(routing(T0))
    assert isinstance(got, Accepted)
    assert got.state.routing is not None and got.state.routing.value.status == "IDLE"
    assert got.state.presence is None
    assert list(state.users()) == [USER]


def test_newer_change_wins_and_older_is_stale() -> None:
    """A newer change is accepted; an older one is dropped as stale."""
    state = ShardState()
    assert isinstance(state.apply(routing(T0 + ms(10), "INTERACTING")), Accepted)
    assert state.apply(routing(T0, "IDLE")) is Dropped.STALE
    assert isinstance(state.apply(routing(T0 + ms(11), "IDLE")), Accepted)
    current = state.get(USER)
    assert current is not None and current.routing is not None
    assert current.routing.value.status == "IDLE"


def test_same_time_same_value_is_a_duplicate() -> None:
    """A repeat of the last change (same time, same value) is dropped as a duplicate."""
    state = ShardState()
    assert isinstance(state.apply(presence(T0)), Accepted)
    assert state.apply(presence(T0)) is Dropped.DUPLICATE


def test_same_millisecond_different_value_is_accepted() -> None:
    """Two different changes stamped in the same millisecond are both accepted, the later arrival wins."""
    state = ShardState()
    assert isinstance(state.apply(routing(T0, "IDLE")), Accepted)
    got = state.apply(routing(T0, "INTERACTING"))
    assert isinstance(got, Accepted) and got.state.routing is not None
    assert got.state.routing.value.status == "INTERACTING"


def test_kinds_are_ordered_independently() -> None:
    """An old routing status is still new when only a newer presence is known."""
    state = ShardState()
    assert isinstance(state.apply(presence(T0 + ms(500))), Accepted)
    got = state.apply(routing(T0))
    assert isinstance(got, Accepted)
    assert got.state.presence is not None and got.state.routing is not None


def test_missing_timestamp_is_restamped_after_the_last_change() -> None:
    """A change without timestamp lands at least 1 ms after the last one, with a matching event id."""
    state = ShardState()
    assert isinstance(state.apply(routing(T0 + ms(1000), "IDLE")), Accepted)
    late = routing(T0, "INTERACTING", known=False)  # receive time behind Genesys's last stamp
    got = state.apply(late)
    assert isinstance(got, Accepted)
    assert got.change.changed_at == T0 + ms(1000) + UNKNOWN_TIMESTAMP_STEP
    assert got.change.event_id == event_id(
        USER, Kind.ROUTING_STATUS, got.change.changed_at, RoutingValue("INTERACTING")
    )
    now = T0 + ms(5000)
    got2 = state.apply(routing(now, "IDLE", known=False))
    assert isinstance(got2, Accepted) and got2.change.changed_at == now
    assert got2.change.event_id


def test_missing_timestamp_with_same_value_is_a_duplicate() -> None:
    """A change without timestamp that repeats the current value is dropped."""
    state = ShardState()
    assert isinstance(state.apply(routing(T0, "IDLE")), Accepted)
    assert state.apply(routing(T0 + ms(9000), "IDLE", known=False)) is Dropped.DUPLICATE


def test_presence_is_enriched_with_the_definition_label() -> None:
    """An accepted presence carries the org's label for its definition, in the change and the state."""
    state = ShardState(labels={"d-lunch": "Lunch"})
    got = state.apply(presence(T0, "MEAL", "d-lunch"))
    assert isinstance(got, Accepted)
    assert isinstance(got.change.value, PresenceValue)
    assert got.change.value.presence_label == "Lunch"
    assert got.state.presence is not None and got.state.presence.value.presence_label == "Lunch"
    state.labels = {"d-lunch": "Lunch break"}
    got2 = state.apply(presence(T0 + ms(1), "AVAILABLE", "d-other"))
    assert isinstance(got2, Accepted) and isinstance(got2.change.value, PresenceValue)
    assert got2.change.value.presence_label is None
    assert state.labels == {"d-lunch": "Lunch break"}


def test_label_does_not_change_the_identity_of_a_change() -> None:
    """A duplicate is recognised even though the stored value carries a label and the new one does not."""
    state = ShardState(labels={"d-avail": "Available"})
    assert isinstance(state.apply(presence(T0)), Accepted)
    assert state.apply(presence(T0)) is Dropped.DUPLICATE


def test_snapshot_is_not_changed_by_later_changes() -> None:
    """An Accepted state snapshot keeps its values after later changes of the same user."""
    state = ShardState()
    first = state.apply(routing(T0, "IDLE"))
    assert isinstance(first, Accepted)
    assert isinstance(state.apply(routing(T0 + ms(1), "INTERACTING")), Accepted)
    assert first.state.routing is not None and first.state.routing.value.status == "IDLE"


def test_load_remove_and_users() -> None:
    """Loaded states order later changes; remove_user forgets a user and says whether it was known."""
    state = ShardState()
    loaded = AgentState("u-2", routing=VersionedRouting(RoutingValue("IDLE"), T0 + ms(100), "e"))
    state.load({"u-2": loaded})
    assert "u-2" in state and len(state) == 1
    assert state.apply(routing(T0, "INTERACTING", user="u-2")) is Dropped.STALE
    assert state.remove_user("u-2") is True
    assert state.remove_user("u-2") is False
    assert list(state.users()) == []


def test_missing_event_id_is_filled_in() -> None:
    """A change without event id gets the stable id of its user, kind, time and value."""
    state = ShardState()
    bare = Change(USER, Kind.ROUTING_STATUS, T0, RoutingValue("IDLE"), T0, Origin.RECONCILE)
    got = state.apply(bare)
    assert isinstance(got, Accepted)
    assert got.change.event_id == event_id(USER, Kind.ROUTING_STATUS, T0, RoutingValue("IDLE"))


STATUSES = ["OFF_QUEUE", "IDLE", "INTERACTING", "NOT_RESPONDING", "COMMUNICATING"]


@settings(max_examples=200, deadline=None)
@given(
    offsets=st.lists(st.integers(0, 10_000), min_size=1, max_size=12, unique=True),
    statuses=st.lists(st.sampled_from(STATUSES), min_size=12, max_size=12),
    data=st.data(),
)
def test_any_permutation_ends_at_the_newest(
    offsets: list[int], statuses: list[str], data: st.DataObject
) -> None:
    """Any arrival order (with duplicates) of a user's changes leaves the state at the newest one."""
    changes = [routing(T0 + ms(o), statuses[i]) for i, o in enumerate(offsets)]
    dups = data.draw(st.lists(st.sampled_from(changes), max_size=5))
    order = data.draw(st.permutations(changes + dups))
    state = ShardState()
    accepted = [a for a in (state.apply(c) for c in order) if isinstance(a, Accepted)]
    newest = max(changes, key=lambda c: c.changed_at)
    current = state.get(USER)
    assert current is not None and current.routing is not None
    assert current.routing.changed_at == newest.changed_at
    assert current.routing.value == newest.value
    # accepted changes are strictly increasing in time, so the topic holds per-user order
    times = [a.change.changed_at for a in accepted]
    assert all(a < b for a, b in itertools.pairwise(times))
    assert len({a.change.event_id for a in accepted}) == len(accepted)


def test_reconciliation_repeats_are_dropped_as_duplicates() -> None:
    """An unchanged state found by reconciliation is a duplicate, as a stream repeat is (the shard counts
    only the stream's)."""
    import dataclasses

    state = ShardState()
    state.apply(routing(T0))
    assert state.apply(dataclasses.replace(routing(T0), origin=Origin.RECONCILE)) is Dropped.DUPLICATE
    assert state.apply(routing(T0)) is Dropped.DUPLICATE


def test_same_millisecond_replay_of_an_earlier_value_is_a_duplicate() -> None:
    """A, then B in the same millisecond, then A replayed at that millisecond: the replay is dropped."""
    state = ShardState()
    assert isinstance(state.apply(routing(T0, "IDLE")), Accepted)
    assert isinstance(state.apply(routing(T0, "INTERACTING")), Accepted)
    assert state.apply(routing(T0, "IDLE")) is Dropped.DUPLICATE
    assert state.apply(routing(T0, "INTERACTING")) is Dropped.DUPLICATE
    current = state.get(USER)
    assert current is not None and current.routing is not None
    assert current.routing.value.status == "INTERACTING"


def test_same_millisecond_replay_of_an_earlier_presence_is_a_duplicate() -> None:
    """The same-millisecond replay rule holds for presence too, and a third distinct value is still new."""
    state = ShardState()
    assert isinstance(state.apply(presence(T0, "AVAILABLE", "d-avail")), Accepted)
    assert isinstance(state.apply(presence(T0, "BREAK", "d-break")), Accepted)
    assert state.apply(presence(T0, "AVAILABLE", "d-avail")) is Dropped.DUPLICATE
    assert isinstance(state.apply(presence(T0, "MEAL", "d-meal")), Accepted)
    assert state.apply(presence(T0, "BREAK", "d-break")) is Dropped.DUPLICATE


def test_a_newer_millisecond_forgets_the_earlier_same_millisecond_values() -> None:
    """After a newer change, the values of the older millisecond are plain stale, and a later
    same-millisecond pair is judged on its own."""
    state = ShardState()
    assert isinstance(state.apply(routing(T0, "IDLE")), Accepted)
    assert isinstance(state.apply(routing(T0, "INTERACTING")), Accepted)
    assert isinstance(state.apply(routing(T0 + ms(1), "OFF_QUEUE")), Accepted)
    assert state.apply(routing(T0, "IDLE")) is Dropped.STALE
    assert isinstance(state.apply(routing(T0 + ms(1), "IDLE")), Accepted)
    assert state.apply(routing(T0 + ms(1), "OFF_QUEUE")) is Dropped.DUPLICATE
