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
from collections.abc import Callable, Sequence
from typing import Final

from bridge import log, memory, metrics
from bridge.channel import ShardContext
from bridge.errors import GenesysError
from bridge.model import Change

__all__ = ["RECONCILE_BATCH", "Reconciler"]

logger = logging.getLogger(__name__)

#: Users fetched per reconciliation batch before their changes are applied.
RECONCILE_BATCH: Final = 500


class Reconciler:
    """One shard's reconciliation task (see the module docstring)."""

    def __init__(
        self,
        ctx: ShardContext,
        *,
        users: Callable[[], Sequence[str]],
        accept: Callable[[Change], bool],
        read: Callable[[Sequence[str]], None] | None = None,
    ) -> None:
        self._ctx = ctx
        self._users = users
        self._accept = accept
        self._read = read
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
        with log.bind(shard=self._ctx.shard_id):
            while True:
                try:
                    await self.users(self._users())
                    self._ctx.session.reconciled()
                    break
                except GenesysError as exc:
                    delay = self._ctx.session.reconcile_failed(self._ctx.clock())
                    logger.warning("reconciliation failed (%s); retrying in %.2f s", exc, delay)
                    await self._ctx.sleep(delay)
            self._ctx.stats.reconciles += 1
            self._ctx.stats.last_reconciled = self._ctx.clock()
            self._ctx.stats.last_gap_started = None
            metrics.RECONCILE_RUNS.inc()
            # The REST pages and records of a reconciliation are garbage now.
            memory.trim()

    async def users(self, users: Sequence[str]) -> None:
        """Fetch these users' current states and emit only what differs from the last recorded ones.

        ``read`` is told each batch of users once their states are accepted
        (the backfill releases those whose gap has nothing to add).
        """
        for start in range(0, len(users), RECONCILE_BATCH):
            batch = users[start : start + RECONCILE_BATCH]
            observed = self._ctx.wall()
            for change in await self._ctx.rest.current_changes(batch, observed_at=observed):
                if self._accept(change):
                    self._ctx.stats.corrections += 1
                    metrics.RECONCILE_CORRECTIONS.inc()
            if self._read is not None:
                self._read(batch)
        logger.info("reconciled %d users", len(users))
