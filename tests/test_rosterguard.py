"""bridge.rosterguard: a short roster listing is not a mass removal."""

from __future__ import annotations

from bridge import metrics
from bridge.rosterguard import CONFIRMATIONS, MAX_DROP_FRACTION, MIN_DROPS_CHECKED, RosterGuard

MAPPED = [f"u{i}" for i in range(1000)]


def test_normal_churn_is_applied() -> None:
    """Drops within the fraction, or small in number, pass at once."""
    guard = RosterGuard()
    assert guard.accept(MAPPED, MAPPED[: int(1000 * (1 - MAX_DROP_FRACTION))])
    assert guard.accept(MAPPED[:20], MAPPED[: 20 - MIN_DROPS_CHECKED])
    assert guard.accept([], MAPPED)


def test_a_short_listing_is_refused_until_it_repeats() -> None:
    """A listing that drops half the roster keeps the map, and counts, until listed CONFIRMATIONS times."""
    guard = RosterGuard()
    before = metrics.ROSTER_REJECTED._value.get()
    short = MAPPED[:500]
    results = [guard.accept(MAPPED, short) for _ in range(CONFIRMATIONS)]
    assert results == [False] * (CONFIRMATIONS - 1) + [True]
    assert metrics.ROSTER_REJECTED._value.get() == before + CONFIRMATIONS - 1


def test_a_different_short_listing_starts_over() -> None:
    """Paging that shifts gives a different short roster each time: never applied."""
    guard = RosterGuard()
    assert not any(guard.accept(MAPPED, MAPPED[i : i + 500]) for i in range(CONFIRMATIONS * 2))
    assert guard.accept(MAPPED, MAPPED)
