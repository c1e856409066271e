"""bridge.model: stable event ids and the record clock and time format."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from bridge.model import (
    Kind,
    PresenceValue,
    RoutingValue,
    clear_time_cache,
    event_id,
    format_time,
    utc_now_ms,
)

T0 = datetime(2026, 5, 1, 9, 0, 0, 123456, tzinfo=UTC)
PRESENCE = PresenceValue("ON_QUEUE", "d-1", "busy day", "PURECLOUD", True, "On Queue")
ROUTING = RoutingValue("INTERACTING")


def test_event_id_is_stable_and_sensitive_to_each_input() -> None:
    """The same change gets the same id; changing user, kind, time or value changes it.

    The label and the message do not: analytics history (the backfill) carries neither, and the
    backfill must write the id the stream would have.
    """
    base = event_id("u-1", Kind.PRESENCE, T0, PRESENCE)
    assert base == event_id("u-1", Kind.PRESENCE, T0, PresenceValue("ON_QUEUE", "d-1", "busy day"))
    variants = [
        event_id("u-2", Kind.PRESENCE, T0, PRESENCE),
        event_id("u-1", Kind.ROUTING_STATUS, T0, PRESENCE),
        event_id("u-1", Kind.PRESENCE, T0 + timedelta(milliseconds=1), PRESENCE),
        event_id("u-1", Kind.PRESENCE, T0, PresenceValue("AVAILABLE", "d-1", "busy day")),
        event_id("u-1", Kind.PRESENCE, T0, PresenceValue("ON_QUEUE", "d-2", "busy day")),
    ]
    assert len({base, *variants}) == len(variants) + 1
    assert base == event_id("u-1", Kind.PRESENCE, T0, PresenceValue("ON_QUEUE", "d-1", "other"))
    assert event_id("u-1", Kind.ROUTING_STATUS, T0, ROUTING) != event_id(
        "u-1", Kind.ROUTING_STATUS, T0, RoutingValue("IDLE")
    )


@given(st.datetimes(timezones=st.just(UTC)))
def test_format_time_is_isoformat_to_the_millisecond(value: datetime) -> None:
    """The orjson-based formatter writes exactly what isoformat would, truncated to ms, with a Z."""
    clear_time_cache()
    assert format_time(value) == value.isoformat(timespec="milliseconds")[:23] + "Z"


def test_utc_now_ms_is_the_wall_clock_to_the_millisecond() -> None:
    before = datetime.now(UTC)
    now = utc_now_ms()
    after = datetime.now(UTC)
    assert now.tzinfo is UTC
    assert now.microsecond % 1000 == 0
    assert before - timedelta(milliseconds=1) < now <= after
    # Within one millisecond it is the same object (format_time's cache then hits).
    same = [utc_now_ms() for _ in range(50)]
    assert any(a is b for a, b in itertools.pairwise(same))
