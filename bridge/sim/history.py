"""Every agent's presence and routing-status history as intervals, for the analytics query.

The change log (:mod:`bridge.sim.org`) is capped by count and shared by all
agents; this history is kept per agent and bounded by time instead: an
interval that ended more than ``retention_ms`` before the agent's latest
change is dropped (default 24 h), and the agent's current interval is always
kept. An interval starts at a change's time and ends where the next one of the
same kind starts (so consecutive intervals chain to the millisecond); the last
one is open.

A change that repeats the current value -- the same (systemPresence,
presence definition) for presence, i.e. a message-only change, or the same
routing status -- does not start a new interval, as in Genesys's analytics,
which stores status segments, not notifications.

:meth:`History.records` answers "which intervals overlap ``[start, end)``"
as of a ``cutoff``: changes later than the cutoff are not there yet (the
analytics delay), so the interval before them still looks open.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["DEFAULT_RETENTION_MS", "PRESENCE", "ROUTING_STATUS", "History", "Interval"]

#: How long an ended interval is kept (24 h).
DEFAULT_RETENTION_MS = 24 * 3600 * 1000

#: The two kinds, as the change log names them.
PRESENCE = "presence"
ROUTING_STATUS = "routingStatus"


@dataclass(frozen=True, slots=True)
class Interval:
    """One analytics record: ``end_ms`` None while the interval is open (as of the cutoff)."""

    user_id: str
    kind: str  # "presence" | "routingStatus"
    start_ms: int
    end_ms: int | None
    value: str  # systemPresence (upper snake case) or routing status
    definition_id: str | None  # the presence definition id (presence only)


@dataclass(slots=True)
class _Track:
    """One agent's intervals of one kind: parallel lists, ``starts`` ascending."""

    starts: list[int] = field(default_factory=list)
    values: list[tuple[str, str | None]] = field(default_factory=list)


def _overlapping(
    track: _Track, start_ms: int, end_ms: int, cutoff_ms: int
) -> Iterator[tuple[int, int | None, tuple[str, str | None]]]:
    """(start, end or None, value) of the track's intervals overlapping the window as of the cutoff."""
    starts = track.starts
    visible = bisect.bisect_right(starts, cutoff_ms)
    first = max(0, bisect.bisect_right(starts, start_ms, 0, visible) - 1)
    last = bisect.bisect_left(starts, end_ms, 0, visible)
    for i in range(first, last):
        # The first one started at or before start_ms and ends after it, by the bisection.
        yield starts[i], starts[i + 1] if i + 1 < visible else None, track.values[i]


class History:
    """Per-agent interval history, bounded by time (see the module docstring)."""

    def __init__(self, retention_ms: int = DEFAULT_RETENTION_MS) -> None:
        self.retention_ms = retention_ms
        self._tracks: dict[tuple[str, str], _Track] = {}
        # One shared tuple per distinct (value, definition) keeps a long history small.
        self._values: dict[tuple[str, str | None], tuple[str, str | None]] = {}

    def record(self, user_id: str, kind: str, at_ms: int, value: str, definition_id: str | None) -> bool:
        """Note a change at ``at_ms`` (not before the agent's last); False if it starts no interval."""
        track = self._tracks.get((user_id, kind))
        if track is None:
            track = self._tracks[(user_id, kind)] = _Track()
        key = (value, definition_id)
        if track.values and track.values[-1] == key:
            return False
        track.starts.append(at_ms)
        track.values.append(self._values.setdefault(key, key))
        self._trim(track, at_ms - self.retention_ms)
        return True

    @staticmethod
    def _trim(track: _Track, oldest_end_ms: int) -> None:
        starts = track.starts
        if len(starts) < 2 or starts[1] > oldest_end_ms:
            return
        # Interval i ends at starts[i + 1]: drop every i whose end is at or before the bound.
        drop = bisect.bisect_right(starts, oldest_end_ms) - 1
        del starts[:drop]
        del track.values[:drop]

    def records(self, user_ids: list[str], start_ms: int, end_ms: int, cutoff_ms: int) -> list[Interval]:
        """Intervals of ``user_ids`` overlapping ``[start_ms, end_ms)`` as of ``cutoff_ms``, unclipped.

        Only changes at or before ``cutoff_ms`` exist; the last of them is
        open. Per agent and kind, in start order; agents in the given order,
        presence before routing status.
        """
        out: list[Interval] = []
        for user_id in user_ids:
            for kind in (PRESENCE, ROUTING_STATUS):
                track = self._tracks.get((user_id, kind))
                if track is not None:
                    out.extend(
                        Interval(user_id, kind, start, end, value, definition_id)
                        for start, end, (value, definition_id) in _overlapping(
                            track, start_ms, end_ms, cutoff_ms
                        )
                    )
        return out

    def user_ids(self) -> list[str]:
        """Every agent with any history."""
        return list(dict.fromkeys(uid for uid, _kind in self._tracks))
