"""One shard's backfill: after every gap, read Genesys's history and write what the stream missed.

The decisions (windows, the per-agent rule, completeness, hold and release,
late writes, reports) are :class:`bridge.genesys.backfill.Backfill`'s; this
module executes them for one shard:

- **queries**: every history query the decisions ask for goes through
  :meth:`~bridge.genesys.rest.GenesysRest.user_history` and thus through the
  client's shared request budget and the endpoint's allowance, so the budget
  is never exceeded; when the budget has nothing spare the query is not sent
  and its agents fall back (``budget``). Each query counts
  ``bridge_backfill_queries_total{result}`` (``ok``, ``delayed``: analytics
  had not caught up with the agents' current states yet, ``error``).
- **fallback**: history refused (403 → ``forbidden``) or failing (5xx and
  timeouts after the client's retries, a malformed answer → ``unavailable``):
  the agents' held changes (the reconciled current state among them) are
  written at once, one WARNING per gap says history is unavailable and why,
  and the history is retried in the background; an unrecovered gap counts
  ``bridge_backfill_fallbacks_total{reason}`` when its record is written.
- **writes**: in-time transitions go through the shard's ordering and the
  sink like any change (``origin: "backfill"``, ``channelId`` of the channel
  after the gap); late ones with :meth:`~bridge.sink.ShardSink.submit_late`
  (event only, ``late: true``); ``bridge_backfill_records_total{outcome}``.
- **stale stream changes** (backfill enabled): a stream change older than
  one already written for its agent (Genesys delivered it out of order) is
  written late, unless a rotation's other channel may have delivered it
  already (while a rotation runs and :data:`REPLAY_GRACE_S` after) or it
  was written for the agent's pending backfill.
- **gap records**: each report becomes a ``bridge.gaps.v1`` record
  (:class:`~bridge.records.GapRecord`, key ``shard-<n>``) and its first one
  observes ``bridge_gap_seconds``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Final

from bridge import log, metrics
from bridge.channel import ShardContext
from bridge.errors import BridgeError, GenesysError
from bridge.events import ShardState
from bridge.farewell import Farewells
from bridge.genesys.backfill import Backfill
from bridge.genesys.gaps import (
    GAP_MARGIN,
    BackfillConfig,
    Cause,
    Fallback,
    GapReport,
    GapSink,
    HistoryQuery,
    Outcome,
    QueryResult,
    oldest_change,
)
from bridge.genesys.history import changes
from bridge.model import AgentState, Change
from bridge.records import GapRecord, gap_id
from bridge.settings import Settings

__all__ = ["BACKFILL_TICK_S", "FORBIDDEN", "REPLAY_GRACE_S", "Backfiller", "backfill_config"]

logger = logging.getLogger(__name__)

#: How often the backfill looks at its holds and retries while some agent is pending.
BACKFILL_TICK_S: Final = 0.25
#: After a rotation the two channels' copies of a change may arrive this far apart.
REPLAY_GRACE_S: Final = 2.0
#: A fleet writing states this long already is not starting (its first shards begin a few seconds
#: apart): a shard of agents without state holds new agents (the map grew; seed 608 grew at 64 s).
ESTABLISHED_S: Final = 15.0
ESTABLISHED: Final = timedelta(seconds=ESTABLISHED_S)
#: The HTTP status of a missing permission.
FORBIDDEN: Final = 403


def backfill_config(settings: Settings) -> BackfillConfig:
    """The backfill's settings as the decisions take them."""
    return BackfillConfig(
        enabled=settings.backfill_enabled,
        hold_s=settings.backfill_hold_s,
        max_lookback_s=settings.backfill_max_lookback_s,
    )


class Backfiller:
    """One shard's backfill task (see the module docstring); :meth:`run` runs as a task of the shard.

    ``write`` orders and writes one change as the shard does (its eventId,
    or None when dropped); ``channel`` is the shard's current channel.
    """

    def __init__(
        self,
        ctx: ShardContext,
        *,
        settings: Settings,
        state: ShardState,
        sink: GapSink,
        write: Callable[[Change, str | None], str | None],
        channel: Callable[[], str | None],
    ) -> None:
        self._ctx = ctx
        self._bridge_id = settings.id
        self._state = state
        self._sink = sink
        self._write = write
        self._channel = channel
        self._wake = asyncio.Event()
        self._hold = timedelta(seconds=settings.backfill_hold_s)
        self._replays_until = 0.0
        self._unobservable: set[str] = set()
        #: Agents whose next window starts at their own last change (a takeover's).
        self._own_windows: set[str] = set()
        self.suspect: list[tuple[Change, str | None]] | None = None
        """Changes that came while our ping waited for its pong (None: no ping out); see :meth:`pinging`."""
        self.decisions = Backfill(backfill_config(settings), self, channel=channel, state_of=state.get)
        self._farewells = Farewells(
            ctx,
            lookback=self.decisions.lookback,
            write=lambda change: write(change, channel()),
            write_late=self.write_late,
        )
        sink.pending_backfills = self.decisions.marks

    # ------------------------------------------------------------- the shard's events

    def pinging(self, out: bool) -> None:
        """Our ping went out (``out``) or its pong came back.

        While the ping is out, the shard's changes wait here (:attr:`suspect`):
        a socket that went quiet and then delivers again without answering the
        ping lost what it would have sent meanwhile (a stall), and the gap that
        follows must find the agents' states as they were before it, or the
        backfill would take the changes after the stall for the last ones
        Kafka has. The pong proves nothing was lost: the changes are written,
        in arrival order (a ping follows seconds of silence: a few at most).
        """
        if not self.decisions.config.enabled:
            return
        if out:
            if self.suspect is None:
                self.suspect = []
            return
        self._deliver_suspect()

    def _deliver_suspect(self) -> None:
        held, self.suspect = self.suspect, None
        for change, channel_id in held or ():
            if self.decisions.active:
                self.decisions.offer(change, channel_id)
            else:
                self._write(change, channel_id)

    def lost(self, cause: Cause) -> None:
        """The socket was lost: the gap starts at its last frame, or at the newest change it delivered
        when that is older (a late stream: :meth:`~bridge.genesys.session.Session.gap_start`),
        minus the margin."""
        ctx = self._ctx
        self.decisions.gap_started(cause, ctx.session.gap_start(ctx.clock(), ctx.wall()) - GAP_MARGIN)

    def replacing(self, cause: str) -> None:
        """A socket or channel replacement began (``cause``: hand-over or rotation)."""
        if cause == Cause.ROTATION:
            self._replays_until = math.inf  # two channels deliver the same changes until it ends
        ctx = self._ctx  # after a freeze: from before it (the old channel may have ended meanwhile)
        frozen = timedelta(seconds=ctx.session.frozen_age(ctx.clock()))
        self.decisions.gap_started(Cause(cause), ctx.wall() - frozen - GAP_MARGIN)

    def loaded(self, users: Collection[str]) -> None:
        """The members' states were loaded at the shard's start: a gap, each agent from its own last change.

        What Kafka lacks of an agent is exactly what came after its last
        written change, whatever the previous owner was doing: it may have
        been inside a gap of its own, not yet backfilled, when it stopped (a
        stall, then a kill), or holding an agent's changes. So every agent's
        window starts at its own loaded change (:meth:`flowing`); the gap's
        ``from`` (its record, the merge with later gaps) is the newest loaded
        change moved back by the hold. No state at all is a fresh shard:
        nothing was ever written, nothing to backfill, unless the fleet has
        written states of other agents for :data:`ESTABLISHED_S` already
        (``ShardState.fleet_since``; the map grew, these are new agents):
        what they did since then is read as for agents added. (Shards of a
        fleet's first start begin seconds apart: they hold nothing back.)
        """
        newest = max((t for u in users if (t := _latest(self._state.get(u))) is not None), default=None)
        if newest is not None:
            self.decisions.gap_started(Cause.TAKEOVER, newest - GAP_MARGIN - self._hold)
        since = self._state.fleet_since
        if newest is not None or (since is not None and self._ctx.wall() - since > ESTABLISHED):
            self._own_windows.update(users)

    def flowing(self, users: Sequence[str], rejected: Collection[str] = ()) -> None:
        """Connected and subscribed: the gap (if any) ends now; its members are held.

        Agents whose topics Genesys ``rejected`` before and permits now were
        not observed for a while, and a takeover's agents (:meth:`loaded`):
        they are backfilled from their own last change.
        """
        self._replays_until = min(self._replays_until, self._ctx.clock() + REPLAY_GRACE_S)
        observable = [u for u in self._unobservable if u not in rejected]
        self._unobservable = set(rejected)
        own = self._own_windows.union(observable)
        self._own_windows.clear()
        starts = self._starts(own) if own else None
        self.decisions.gap_ended(self._ctx.clock(), self._ctx.wall(), users, self._state.get, starts)
        # What arrived after the silence, before the reconnect: held like any post-gap change.
        self._deliver_suspect()
        self._wake.set()

    def unobserved(self, users: Collection[str]) -> None:
        """Agents joined the shard and are not subscribed yet: the next gap's end backfills each from
        its own last change (an added agent's changes before its subscription are in no gap)."""
        self._own_windows.update(users)

    def added(self, users: Sequence[str]) -> None:
        """Agents joined the running shard: backfilled from their loaded state, or the whole lookback."""
        if users:
            now, wall, starts = self._ctx.clock(), self._ctx.wall(), self._starts(users)
            self._own_windows.difference_update(users)
            self.decisions.gap_ended(now, wall, users, self._state.get, starts, joined=True)
            self._wake.set()

    def lost_silently(self, users: Sequence[str]) -> None:
        """The sweep found these agents changed without the stream saying so: backfill each from its
        own last change (what the stream lost before the change the sweep found is in the history)."""
        if users:
            now, wall, starts = self._ctx.clock(), self._ctx.wall(), self._starts(users)
            self.decisions.gap_ended(
                now, wall, users, self._state.get, starts, joined=True, cause=Cause.SWEEP
            )
            self._wake.set()

    def corrected(self, change: Change, accept: Callable[[Change], bool]) -> bool:
        """A sweep correction: the stream lost the agent's changes, so its history comes first.

        The agent gets a backfill of its own (cause ``sweep``) from its last
        written change; the correction (``accept`` is the shard's) is held like
        any post-gap change and written after the transitions the history
        holds. True: corrected (written now, or held for the backfill).
        """
        decisions, user = self.decisions, change.user_id
        if not decisions.config.enabled:
            return accept(change)
        if not decisions.held(user):
            self.lost_silently([user])
        written = accept(change)
        self.reconciled([user])
        return written or decisions.held(user)

    async def farewell(self, states: Mapping[str, AgentState]) -> None:
        """Agents leave the shard (their tombstones follow): their history first (:mod:`bridge.farewell`)."""
        if self.decisions.config.enabled:
            await self._farewells.say(states)
            self._wake.set()

    def _starts(self, users: Collection[str]) -> dict[str, datetime | None]:
        """Per agent: the older of its two last changes (minus the margin); without a state, when the
        fleet began writing (``ShardState.fleet_since``), or None (the whole lookback).

        The older one: each kind is filtered by its own last change, so the
        window must reach back to the kind whose last change is older.
        """
        times = {u: oldest_change(self._state.get(u)) or self._state.fleet_since for u in users}
        return {u: None if at is None else at - GAP_MARGIN for u, at in times.items()}

    def stale(self, change: Change, channel_id: str | None) -> None:
        """A stream change older than its agent's last written one: write it late if it is new."""
        decisions = self.decisions
        if (
            decisions.config.enabled
            and self._ctx.clock() >= self._replays_until
            and decisions.unwritten(change)
        ):
            with self._sink.atomic():
                self._sink.submit_late(change, channel_id)
                if change.user_id in decisions.marks:  # the mark names what was written
                    self.restate(change.user_id)
            metrics.STALE_WRITTEN_LATE.inc()

    def reconciled(self, users: Sequence[str]) -> None:
        """The reconciliation read these members' current states."""
        if self.decisions.active:
            with self._sink.atomic():
                self.decisions.reconciled(self._ctx.clock(), users)
            self._wake.set()

    # ------------------------------------------------------------- the task

    async def run(self) -> None:
        """Execute the decisions until cancelled."""
        decisions, ctx = self.decisions, self._ctx
        with log.bind(shard=ctx.shard_id):
            while True:
                if not decisions.active and not self._farewells.pending:
                    self._wake.clear()
                    await self._wake.wait()
                await self._farewells.recheck()
                with self._sink.atomic():
                    decisions.tick(ctx.clock(), ctx.wall())
                for query in decisions.due(ctx.clock()):
                    await self._query(query)
                await ctx.sleep(BACKFILL_TICK_S)

    async def _query(self, query: HistoryQuery) -> None:
        ctx, decisions = self._ctx, self.decisions
        budget = ctx.rest.budget
        if budget is not None and budget.spare() < 1:
            self._failed(query, Fallback.BUDGET, "the request budget is spent")
            return
        try:
            found = await ctx.rest.user_history(query.users, query.start, ctx.wall())
        except GenesysError as exc:
            reason = Fallback.FORBIDDEN if exc.status == FORBIDDEN else Fallback.UNAVAILABLE
            metrics.BACKFILL_QUERIES.labels(result=QueryResult.ERROR.value).inc()
            self._failed(query, reason, str(exc))
            return
        except BridgeError as exc:  # a malformed answer
            metrics.BACKFILL_QUERIES.labels(result=QueryResult.ERROR.value).inc()
            self._failed(query, Fallback.UNAVAILABLE, str(exc))
            return
        wall = ctx.wall()
        transitions = {user: changes(history, observed_at=wall) for user, history in found.items()}
        with self._sink.atomic():  # late transitions, and the states ending their marks
            result = decisions.history(ctx.clock(), wall, query.users, transitions, start=query.start)
        metrics.BACKFILL_QUERIES.labels(result=result.value).inc()

    def _failed(self, query: HistoryQuery, reason: Fallback, why: str) -> None:
        if self.decisions.failed(self._ctx.clock(), query.users, reason, start=query.start):
            logger.warning(
                "history unavailable (%s: %s); reconciliation wrote the current states, "
                "the gap's transitions are retried in the background",
                reason.value,
                why,
            )

    # ------------------------------------------------------------- effects

    def write(self, change: Change, channel_id: str | None, /) -> str | None:
        return self._write(change, channel_id)

    def write_late(self, change: Change, /) -> None:
        self._sink.submit_late(change, self._channel())

    def write_gap(self, report: GapReport, /) -> None:
        ctx = self._ctx
        self._sink.submit_gap(_gap_record(report, self._bridge_id, ctx.shard_id, self._channel(), ctx.wall()))
        if not report.recovered and report.fallback is not None:
            metrics.BACKFILL_FALLBACKS.labels(reason=report.fallback.value).inc()
        if report.first:
            metrics.GAP_SECONDS.observe(max(0.0, (report.end - report.start).total_seconds()))
        logger.info(
            "gap %s from %s to %s: %d transitions backfilled (%d late), %s",
            report.cause.value,
            report.start.isoformat(),
            report.end.isoformat(),
            report.backfilled,
            report.late,
            "recovered" if report.recovered else f"not recovered ({report.fallback})",
        )

    def count(self, outcome: Outcome, n: int, /) -> None:
        metrics.BACKFILL_RECORDS.labels(outcome=outcome.value).inc(n)

    def restate(self, user_id: str, /) -> None:
        state = self._state.get(user_id)
        if state is not None:
            if state.pending is not None:  # a loaded state: its own mark is the decisions' now
                state = dataclasses.replace(state, pending=None)
                self._state.load({user_id: state})
            self._sink.submit_state(state)


def _gap_record(
    report: GapReport, bridge_id: str, shard: int, channel: str | None, wall: datetime
) -> GapRecord:
    """The ``bridge.gaps.v1`` record of a gap report."""
    return GapRecord.model_validate(
        {
            "schema": "bridge.gaps.v1",
            "gapId": gap_id(bridge_id, shard, report.start, report.cause.value),
            "shard": shard,
            "channelId": channel,
            "cause": report.cause.value,
            "from": report.start,
            "to": report.end,
            "agents": report.agents,
            "backfilled": report.backfilled,
            "late": report.late,
            "recovered": report.recovered,
            "fallback": None if report.fallback is None else report.fallback.value,
            "writtenAt": wall,
        }
    )


def _latest(state: AgentState | None) -> datetime | None:
    """The newest ``changed_at`` of an agent's state (None without one)."""
    if state is None:
        return None
    times = [v.changed_at for v in (state.presence, state.routing) if v is not None]
    return max(times) if times else None
