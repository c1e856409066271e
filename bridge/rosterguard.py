"""Refuse roster listings that are implausibly short (pure: no I/O, no clock).

A listing of the roster can come back short without any agent having left:
Genesys's paging shifts while agents are added or removed, or part of a
listing fails quietly. Applied as is, it becomes a mass removal: every
missing agent is unsubscribed and tombstoned, and comes back one refresh
later. The coordinator therefore asks :class:`RosterGuard` first.

A listing is *implausible* when it drops more than
:data:`MAX_DROP_FRACTION` of the agents the map holds now, and more than
:data:`MIN_DROPS_CHECKED` agents (small rosters shrink by large fractions
legitimately). An implausible listing is refused (the map stays as it is),
logged and counted in ``bridge_roster_rejected_total``, until the same short
roster has been listed :data:`CONFIRMATIONS` refreshes in a row: then it is
real (a mass deletion) and applied. Any other listing resets the count.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from bridge import metrics

__all__ = ["CONFIRMATIONS", "MAX_DROP_FRACTION", "MIN_DROPS_CHECKED", "RosterGuard"]

logger = logging.getLogger(__name__)

#: More than this fraction of the mapped agents missing from one listing is implausible ...
MAX_DROP_FRACTION = 0.2
#: ... when it is also more than this many agents.
MIN_DROPS_CHECKED = 10
#: Consecutive refreshes that must list the same short roster before it is applied.
CONFIRMATIONS = 3


class RosterGuard:
    """Decides whether a roster listing may replace the map's member lists."""

    def __init__(self) -> None:
        self._suspect: frozenset[str] | None = None
        self._seen = 0

    def accept(self, mapped: Collection[str], listed: Collection[str]) -> bool:
        """True to apply ``listed``; False to keep the map (the listing was logged and counted)."""
        roster = frozenset(listed)
        dropped = len(set(mapped) - roster)
        if dropped <= MIN_DROPS_CHECKED or dropped <= MAX_DROP_FRACTION * len(mapped):
            self._suspect, self._seen = None, 0
            return True
        if roster == self._suspect:
            self._seen += 1
        else:
            self._suspect, self._seen = roster, 1
        if self._seen >= CONFIRMATIONS:
            logger.warning(
                "the roster lists %d of %d mapped agents for the %d. time in a row: applying it",
                len(roster),
                len(mapped),
                self._seen,
            )
            self._suspect, self._seen = None, 0
            return True
        metrics.ROSTER_REJECTED.inc()
        logger.error(
            "roster listing refused: it drops %d of %d mapped agents (more than %.0f%%); keeping the map "
            "(applied if %d refreshes in a row list the same roster; this was %d)",
            dropped,
            len(mapped),
            MAX_DROP_FRACTION * 100,
            CONFIRMATIONS,
            self._seen,
        )
        return False
