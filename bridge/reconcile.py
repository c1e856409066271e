"""Reconciliation: after a gap, read every member from the bulk REST APIs and write only what changed.

Genesys never replays what it sent while no socket was open, so every gap
(start, reconnect, hand-over, rotation) ends with a reconciliation whose
changes carry ``origin: "reconcile"``; the agents' ordering in
:class:`~bridge.events.ShardState` drops what the stream already delivered.
A failed reconciliation is retried after the session's backoff; a new gap
starts it over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Final

from bridge import log, memory, metrics
from bridge.channel import Rest, ShardStats
from bridge.errors import GenesysError
from bridge.genesys.session import Session
from bridge.model import Change

__all__ = ["RECONCILE_BATCH", "Reconciler"]

logger = logging.getLogger(__name__)

#: Users fetched per reconciliation batch before their changes are applied.
RECONCILE_BATCH: Final = 500


class Reconciler:
    """One shard's reconciliation task (see the module docstring)."""

    def __init__(
        self,
        *,
        shard_id: int,
        rest: Rest,
        session: Session,
        stats: ShardStats,
        users: Callable[[], Sequence[str]],
        accept: Callable[[Change], bool],
        clock: Callable[[], float],
        wall: Callable[[], datetime],
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self._shard_id = shard_id
        self._rest = rest
        self._session = session
        self._stats = stats
        self._users = users
        self._accept = accept
        self._clock = clock
        self._wall = wall
        self._sleep = sleep
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """A reconciliation is under way."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Reconcile every member now (a running reconciliation starts over)."""
        if self._task is not None:
            self._task.cancel()
        self._task = asyncio.create_task(self._all())

    def cancel(self) -> None:
        """Disconnected: stop reconciling (the next connection starts over)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _all(self) -> None:
        with log.bind(shard=self._shard_id):
            while True:
                try:
                    await self.users(self._users())
                    self._session.reconciled()
                    break
                except GenesysError as exc:
                    delay = self._session.reconcile_failed(self._clock())
                    logger.warning("reconciliation failed (%s); retrying in %.2f s", exc, delay)
                    await self._sleep(delay)
            self._stats.reconciles += 1
            self._stats.last_reconciled = self._clock()
            self._stats.last_gap_started = None
            metrics.RECONCILE_RUNS.inc()
            # The REST pages and records of a reconciliation are garbage now.
            memory.trim()

    async def users(self, users: Sequence[str]) -> None:
        """Fetch these users' current states and emit only what differs from the last recorded ones."""
        for start in range(0, len(users), RECONCILE_BATCH):
            batch = users[start : start + RECONCILE_BATCH]
            observed = self._wall()
            for change in await self._rest.current_changes(batch, observed_at=observed):
                if self._accept(change):
                    self._stats.corrections += 1
                    metrics.RECONCILE_CORRECTIONS.inc()
        logger.info("reconciled %d users", len(users))
