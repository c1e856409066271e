"""Per-agent interval history: chaining, repeats, the cutoff, and the time bound."""

from __future__ import annotations

from bridge.sim.history import PRESENCE, ROUTING_STATUS, History, Interval


def _starts(history: History, user: str, cutoff: int, start: int = 0, end: int = 10**9) -> list[int]:
    return [r.start_ms for r in history.records([user], start, end, cutoff)]


def test_intervals_chain_and_the_last_is_open() -> None:
    """Each interval ends where the next of its kind starts; the last has no end."""
    h = History()
    h.record("u", PRESENCE, 100, "AVAILABLE", "d1")
    h.record("u", ROUTING_STATUS, 100, "OFF_QUEUE", None)
    h.record("u", PRESENCE, 200, "BREAK", "d2")
    assert h.records(["u"], 0, 1000, 1000) == [
        Interval("u", PRESENCE, 100, 200, "AVAILABLE", "d1"),
        Interval("u", PRESENCE, 200, None, "BREAK", "d2"),
        Interval("u", ROUTING_STATUS, 100, None, "OFF_QUEUE", None),
    ]


def test_a_repeated_value_starts_no_interval() -> None:
    """The same (value, definition) again (message-only change) is no new interval; another definition is."""
    h = History()
    assert h.record("u", PRESENCE, 100, "MEAL", "meal")
    assert not h.record("u", PRESENCE, 150, "MEAL", "meal")
    assert h.record("u", PRESENCE, 200, "MEAL", "lunch")
    assert _starts(h, "u", 1000) == [100, 200]


def test_changes_after_the_cutoff_do_not_exist_yet() -> None:
    """As of a cutoff before the second change, the first interval is still open."""
    h = History()
    h.record("u", PRESENCE, 100, "AVAILABLE", "d1")
    h.record("u", PRESENCE, 200, "BREAK", "d2")
    assert h.records(["u"], 0, 1000, 199) == [Interval("u", PRESENCE, 100, None, "AVAILABLE", "d1")]
    assert _starts(h, "u", 200) == [100, 200]


def test_overlap_is_half_open_and_unclipped() -> None:
    """An interval ending at the window's start is out; one starting at its end is out; others whole."""
    h = History()
    for at, value in ((100, "A"), (200, "B"), (300, "C"), (400, "D")):
        h.record("u", ROUTING_STATUS, at, value, None)
    assert [(r.start_ms, r.end_ms) for r in h.records(["u"], 250, 300, 1000)] == [(200, 300)]
    assert _starts(h, "u", 1000, start=200, end=400) == [200, 300]
    assert _starts(h, "u", 1000, start=450, end=500) == [400]


def test_ended_intervals_older_than_the_retention_are_dropped() -> None:
    """Bounded by time: an interval that ended more than retention before the latest change goes."""
    h = History(retention_ms=1000)
    h.record("u", PRESENCE, 0, "A", "a")
    h.record("u", PRESENCE, 500, "B", "b")
    h.record("u", PRESENCE, 1400, "C", "c")
    assert _starts(h, "u", 10**6) == [0, 500, 1400]  # [0, 500) ended 900 ms before the last change
    h.record("u", PRESENCE, 1600, "D", "d")
    assert _starts(h, "u", 10**6) == [500, 1400, 1600]
    h.record("u", PRESENCE, 10**5, "E", "e")
    assert _starts(h, "u", 10**6) == [1600, 10**5]  # the interval before the latest always stays
