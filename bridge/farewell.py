"""The history of agents leaving a shard: written before their tombstones, and checked again after.

An agent removed from the roster (deleted, say, while its shard had no
owner) changed state before it left, and the stream may not have said so.
Before the shard tombstones it, :meth:`Farewells.say` reads its history
after its last written change (one query, at most
:data:`FAREWELL_TIMEOUT_S`, so the tombstones are not held up) and writes
what Kafka lacks like any backfilled change. Genesys's analytics lag, and
the query may fail (429s, 5xx, a timeout): so the same history is read
again, in the shard's backfill task, :data:`RECHECKS_S` after; what those
reads find is written late (event topics only, ``late: true``: the state
is tombstoned by then), each transition once. A re-read waits while the
request budget has nothing spare and takes :data:`FAREWELL_TIMEOUT_S` at
most: the backfill task it runs in also releases the gaps' holds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from bridge import metrics
from bridge.channel import ShardContext
from bridge.errors import BridgeError
from bridge.genesys.gaps import GAP_MARGIN, Outcome, oldest_change, transitions_after
from bridge.genesys.history import changes
from bridge.model import AgentState, Change

__all__ = ["FAREWELL_TIMEOUT_S", "RECHECKS_S", "Farewells"]

logger = logging.getLogger(__name__)

#: How long the history of agents leaving the shard may take before their tombstones go anyway.
FAREWELL_TIMEOUT_S: Final = 5.0
#: After the first read, the leavers' history is read again this long after it (seconds).
RECHECKS_S: Final = (5.0, 15.0, 45.0)


@dataclass
class _Leavers:
    """Agents that left together: their last written states, what was written since, the next read."""

    states: dict[str, AgentState]
    start: datetime
    due: list[float]
    written: set[str] = field(default_factory=set)


class Farewells:
    """One shard's leaving agents (see the module docstring).

    ``write`` orders and writes a change as the shard does (its eventId, or
    None when dropped); ``write_late`` writes one to its event topic only.
    """

    def __init__(
        self,
        ctx: ShardContext,
        *,
        lookback: timedelta,
        write: Callable[[Change], str | None],
        write_late: Callable[[Change], None],
    ) -> None:
        self._ctx = ctx
        self._lookback = lookback
        self._write = write
        self._write_late = write_late
        self._pending: list[_Leavers] = []

    @property
    def pending(self) -> bool:
        """Some leavers' history is to be read again."""
        return bool(self._pending)

    async def say(self, states: Mapping[str, AgentState]) -> None:
        """Before the tombstones: write what the leavers' history holds after their last changes."""
        times = [t for s in states.values() if (t := oldest_change(s)) is not None]
        if not times:
            return
        ctx = self._ctx
        wall = ctx.wall()
        leavers = _Leavers(
            dict(states),
            max(min(times) - GAP_MARGIN, wall - self._lookback),
            [ctx.clock() + s for s in RECHECKS_S],
        )
        self._pending.append(leavers)
        written = await self._read(leavers, late=False, timeout_s=FAREWELL_TIMEOUT_S)
        if written:
            logger.info(
                "%d transitions of %d leaving agents backfilled before their tombstones", written, len(states)
            )

    async def recheck(self) -> None:
        """Read again the history of the leavers whose time has come; write late what it adds."""
        now, budget = self._ctx.clock(), self._ctx.rest.budget
        for leavers in list(self._pending):
            if leavers.due[0] > now or (budget is not None and budget.spare() < 1):
                continue  # not yet, or later: the budget is the gaps' first
            leavers.due.pop(0)
            if not leavers.due:
                self._pending.remove(leavers)
            written = await self._read(leavers, late=True, timeout_s=FAREWELL_TIMEOUT_S)
            if written:
                logger.info("%d transitions of agents that left the shard written late", written)

    async def _read(self, leavers: _Leavers, *, late: bool, timeout_s: float) -> int:
        ctx = self._ctx
        wall = ctx.wall()
        users = sorted(leavers.states)
        try:
            found = await asyncio.wait_for(ctx.rest.user_history(users, leavers.start, wall), timeout_s)
        except (BridgeError, TimeoutError) as exc:
            logger.warning(
                "history of %d agents leaving the shard unavailable (%r); %s",
                len(users),
                exc,
                "read again later" if leavers.due else "given up",
            )
            return 0
        written = 0
        for user, history in found.items():
            for change in transitions_after(leavers.states.get(user), changes(history, observed_at=wall)):
                if change.event_id in leavers.written:
                    continue
                leavers.written.add(change.event_id)
                if late:
                    self._write_late(change)
                    written += 1
                else:
                    written += self._write(change) is not None
        if written:
            metrics.BACKFILL_RECORDS.labels(outcome=Outcome.LATE if late else Outcome.WRITTEN).inc(written)
        return written
