"""The background sweep: re-read every owned agent's state from Genesys, correct what was lost.

The stream can lose a change without any gap the shard could notice: a
frame dropped on the way, a channel that keeps heartbeating after Genesys
stopped delivering its events (``no_longer_subscribed``), a malformed frame
sent to the dead-letter topic. Nothing would reconcile such an agent, and it
would stay wrong in Kafka until it changes again (hours, for an agent on a
break). So each shard runs a :class:`Sweep`, which bounds that staleness: every
agent of the shard is read again once per ``interval_s``
(``BRIDGE_SWEEP_INTERVAL_S``, default 900 s) and anything lost is corrected
within one interval.

How (per shard):

- **The same calls as reconciliation**: ``GET /api/v2/users?id=…&expand=presence,routingStatus``
  (:meth:`~bridge.genesys.rest.GenesysRest.current_changes`), 100 agents a
  call, and the same ordering and dedupe (:class:`~bridge.events.ShardState`):
  a state older than the one the shard holds is never written.
- **Spread evenly**: the shard's agents are read in batches of
  :data:`SWEEP_BATCH` (one REST call each), one batch every
  ``interval_s / batches`` seconds, starting at a random phase so the shards
  of a worker do not sweep in step. Cost: ``N / 100`` calls per interval for
  N agents, e.g. 10 calls per 15 minutes for a full shard of 1,000 and 190
  (12.7 a minute, about 5 % of the default 240/min budget) for the 19,000
  agents one OAuth client can hold (20 channels, one kept spare).
- **Within the REST budget and after everything else**: every call goes
  through the client's shared :class:`~bridge.genesys.budget.RequestBudget`, so
  the budget is never exceeded; and before each call the sweep waits until
  at least :data:`SWEEP_BUDGET_RESERVE` of the budget's window is unspent, so
  it never takes the requests that reconnects, reconciliations and
  subscriptions need. A batch is skipped while the shard is not connected
  and subscribed, or while a reconciliation runs (that covers every agent).
- **Only real differences, never over a newer stream change**: an agent is
  corrected only when Genesys's value differs from the shard's last known
  one; an agent whose state changed while its batch was being read (a stream
  frame arrived meanwhile) is left for the next round; and a difference
  younger than :data:`SWEEP_IN_FLIGHT_GRACE_S` (by Genesys's timestamp) is
  left too, since its frame is most likely still on its way.

Every correction is written as an ``origin: "reconcile"`` record, counted in
``bridge_sweep_corrections_total`` and logged as a WARNING naming the agents:
a correction means the stream lost something. With the backfill on, the
shard's ``accept`` first opens the agent's own backfill (cause ``sweep``,
:meth:`bridge.backfill.Backfiller.corrected`), so the transitions lost before
the correction are written from history ahead of it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from bridge import metrics
from bridge.errors import GenesysError
from bridge.events import ShardState
from bridge.genesys.budget import RequestBudget
from bridge.genesys.rest import USERS_MAX_IDS
from bridge.model import AgentState, Change, Kind, PresenceValue, RoutingValue

__all__ = [
    "SWEEP_BATCH",
    "SWEEP_BUDGET_POLL_S",
    "SWEEP_BUDGET_RESERVE",
    "SWEEP_IN_FLIGHT_GRACE_S",
    "Fetch",
    "Sweep",
    "SweepStats",
]

logger = logging.getLogger(__name__)

#: Agents per sweep batch: one ``GET /api/v2/users?id=…`` call.
SWEEP_BATCH: Final = USERS_MAX_IDS
#: The sweep calls only while at least this share of the budget's window is unspent.
SWEEP_BUDGET_RESERVE: Final = 0.5
#: How often a sweep held back by the budget looks again.
SWEEP_BUDGET_POLL_S: Final = 1.0
#: A difference this young (Genesys time vs our read) is probably still on the stream.
SWEEP_IN_FLIGHT_GRACE_S: Final = 5.0
#: Agents named in one correction warning (the rest are counted).
LOGGED_AGENTS_MAX: Final = 20

#: Reads the current changes of some agents (``GenesysRest.current_changes``).
Fetch = Callable[..., Awaitable[list[Change]]]


@dataclass
class SweepStats:
    """What tests and operators read about one shard's sweep."""

    rounds: int = 0
    batches: int = 0
    skipped: int = 0
    corrections: int = 0
    failures: int = 0


class Sweep:
    """One shard's background sweep (see the module docstring); run :meth:`run` as a task."""

    def __init__(
        self,
        *,
        users: Callable[[], Sequence[str]],
        state: ShardState,
        fetch: Fetch,
        budget: Callable[[], RequestBudget | None],
        accept: Callable[[Change], bool],
        active: Callable[[], bool],
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("the sweep interval must be positive")
        self._users = users
        self._state = state
        self._fetch = fetch
        self._budget = budget
        self._accept = accept
        self._active = active
        self.interval_s = interval_s
        self._clock = clock
        self._wall = wall
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.stats = SweepStats()

    async def run(self) -> None:
        """Sweep forever, one round per interval."""
        first = True
        while True:
            users = list(self._users())
            batches = [users[i : i + SWEEP_BATCH] for i in range(0, len(users), SWEEP_BATCH)]
            if not batches:
                await self._sleep(self.interval_s)
                continue
            period = self.interval_s / len(batches)
            for index, batch in enumerate(batches):
                # A random phase once, so the shards of a worker do not sweep in step.
                await self._sleep(period * self._rng.random() if first and index == 0 else period)
                await self._wait_for_budget()
                try:
                    await self.sweep_batch(batch)
                except Exception:  # a bug must not end the sweep for the shard's lifetime
                    self.stats.failures += 1
                    logger.exception("sweep of %d agents failed; they are read again next round", len(batch))
            first = False
            self.stats.rounds += 1

    async def _wait_for_budget(self) -> None:
        budget = self._budget()
        if budget is None:
            return
        reserve = math.ceil(budget.per_window * SWEEP_BUDGET_RESERVE)
        while budget.spare() < reserve:
            await self._sleep(SWEEP_BUDGET_POLL_S)

    async def sweep_batch(self, batch: Sequence[str]) -> list[str]:
        """Read one batch and correct what differs; returns the corrected agents."""
        if not self._active():
            self.stats.skipped += 1
            return []
        before = {user: self._state.get(user) for user in batch}
        observed = self._wall()
        try:
            changes = await self._fetch(batch, observed_at=observed)
        except GenesysError as exc:
            self.stats.failures += 1
            logger.warning("sweep of %d agents failed (%s); they are read again next round", len(batch), exc)
            return []
        self.stats.batches += 1
        if not self._active():  # a gap began meanwhile: its reconciliation reads them all
            return []
        young = observed - timedelta(seconds=SWEEP_IN_FLIGHT_GRACE_S)
        corrected: dict[str, None] = {}
        for change in changes:
            user = change.user_id
            if user not in before:
                continue
            current = self._state.get(user)
            if current is not before[user]:
                continue  # changed while we read: a newer change may be there; next round
            if _same_value(current, change):
                continue
            if change.timestamp_known and change.changed_at > young:
                continue  # most likely still on its way on the stream
            if self._accept(change):
                corrected[user] = None
            before[user] = self._state.get(user)
        if corrected:
            self._report(list(corrected))
        return list(corrected)

    def _report(self, users: list[str]) -> None:
        self.stats.corrections += len(users)
        metrics.SWEEP_CORRECTIONS.inc(len(users))
        named = ", ".join(users[:LOGGED_AGENTS_MAX])
        more = f" and {len(users) - LOGGED_AGENTS_MAX} more" if len(users) > LOGGED_AGENTS_MAX else ""
        logger.warning(
            "sweep corrected %d agents whose change the stream lost: %s%s", len(users), named, more
        )


def _same_value(state: AgentState | None, change: Change) -> bool:
    """True when the shard already holds ``change``'s value for its kind."""
    if state is None:
        return False
    value = change.value
    if change.kind is Kind.PRESENCE:
        presence = state.presence
        return presence is not None and isinstance(value, PresenceValue) and presence.value.same_as(value)
    routing = state.routing
    return routing is not None and isinstance(value, RoutingValue) and routing.value.same_as(value)
