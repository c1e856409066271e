"""What a shard decides about backfilling its gaps, sans-I/O: gap ends, states and history in, writes out.

Genesys never replays what it sent while no socket was open, but its
analytics history (``POST /api/v2/analytics/users/details/query``) keeps
every presence and routing-status interval. After each gap the shard reads
the history of its agents and writes every transition Kafka lacks, with the
stream's own eventId. This module holds the decisions; the shard-side
:mod:`bridge.backfill` does the queries, the sleeps and the writes. Nothing
here reads a clock: every input carries ``now`` (monotonic seconds) and/or
``wall`` (aware UTC).

**Gap windows** (:meth:`Backfill.gap_started`, :meth:`Backfill.gap_ended`):
every gap has a cause, a ``from`` and a ``to`` in wall time. ``from`` is the
last frame seen on a lost socket (reconnect), when a replacement began
(hand-over, rotation), or the newest loaded ``changed_at`` (start, takeover),
each minus :data:`GAP_MARGIN`; ``to`` is when the stream flows again
(connected and subscribed). ``from`` is clamped to ``to - max_lookback_s``;
a gap older than that is marked ``too_old`` (what is before is not
backfilled). A gap that ends while an earlier one is still being backfilled
merges into it (the earlier ``from`` and cause are kept, ``to`` moves); its
agents are held again, and a history answer to a query sent before that does
not count for them (:meth:`~bridge.genesys.gaps.AgentGap.answered_by`).

**What Kafka lacks, per agent and kind**: at the gap's end the agent's last
accepted change is its ``since``, or, when changes of the agent were written
while the gap was open (a replacement channel delivers them as it subscribes),
its last change before the first of those (:class:`~bridge.genesys.gaps.GapWrites`):
the gap may have lost what came before them, and they are not written again.
A history transition is written iff its ``changed_at`` is after ``since``
(after the agent's ``from`` when it has no state), at or before ``target``
(below), its eventId is not among those written for the agent since its gap
began, and its value differs from the previous one (a record split in two by
Genesys's storage is not a change).

**Target and completeness**: the reconciliation after the gap reads each
agent's current state; its ``changed_at`` is the ``target`` the history must
reach. Analytics lags (its answer lacks the youngest changes, and the
interval before them looks open), so per kind the history is complete when
it holds an interval starting at the target, or at a change of the agent
seen on the stream at or after ``to`` (analytics holds everything older than
what it shows, so nothing of the gap is missing), or when ``target`` is not
after ``since`` (nothing changed). A presence change of the message alone
starts no analytics interval: when the last interval has the target's value
and the target is :data:`MESSAGE_ONLY_SETTLE_S` old, the history is complete
too. Incomplete → the agent's history is asked again after
:data:`DELAYED_RETRY_S`.

**Hold**: from the gap's end every change of an agent whose backfill is
pending is held per agent, in arrival order (:meth:`Backfill.offer`). Once its
history is complete the transitions, the reconciled current state and the
held changes are applied sorted by ``changed_at`` through the shard's
ordering (which drops duplicates and stale ones), and the agent is released.
``hold_s`` after ``to`` every still-held agent is released without its
history (its held changes applied in order), and its history is retried with
backoff; what it finds then is written late (:meth:`Effects.write_late`:
event topic only, ``late: true``), deduplicated by the same eventId set.

**Fallback** (:meth:`Backfill.failed`): history refused (``forbidden``),
failing (``unavailable``) or out of request budget (``budget``): the agents
are released at once, the gap is reported unrecovered, and their history is
retried in the background with backoff (:data:`RETRY_MAX_S`; forbidden up to
:data:`FORBIDDEN_RETRY_MAX_S`) until their ``from`` falls out of the
lookback (:data:`MIN_RETRY_WINDOW_S` at least, and not before their current
state has been read: until then their history was never asked for).

**Pending marks** (:attr:`Backfill.marks`): an agent released before its
history was read gets, in every state record written for it, its windows
and the eventIds written for it since the gap began
(:meth:`AgentGap.pending`); when its backfill ends (complete, or given up)
its state is written once more without them (:meth:`Effects.restate`, in
the same transaction as the late transitions); late transitions written
while it stays pending restate it too, so that the mark names them. A shard that loads a marked
state (a takeover, a restart) backfills the agent from those windows and
skips those eventIds: a writer fenced or killed before its retry loses
nothing, and nothing is written twice.

**Gap reports**: one :class:`GapReport` when every agent of the gap is
complete or has fallen back; when a gap reported unrecovered is recovered
later, a second report with ``recovered=True``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Final

from bridge.genesys.gaps import (
    HISTORY_MAX_USERS,
    MIN_RETRY_WINDOW_S,
    QUERY_START_SPREAD_S,
    AgentGap,
    BackfillConfig,
    Cause,
    Effects,
    Fallback,
    Gap,
    GapWrites,
    Held,
    HistoryQuery,
    Outcome,
    QueryResult,
    by_kind,
)
from bridge.model import AgentState, Change, Kind, Origin
from bridge.records import Pending

__all__ = ["Backfill"]


def _chunks(agents: Iterable[AgentGap]) -> list[list[AgentGap]]:
    """Agents by window start, at most a query's users each, starts at most SPREAD apart."""
    chunks: list[list[AgentGap]] = []
    for agent in sorted(agents, key=lambda a: (a.start, a.user_id)):
        full = bool(chunks) and len(chunks[-1]) >= HISTORY_MAX_USERS
        if not chunks or full or agent.start - chunks[-1][0].start > SPREAD:
            chunks.append([])
        chunks[-1].append(agent)
    return chunks


def _in_order(
    transitions: Iterable[Change], held: Iterable[Held], channel: str | None
) -> list[tuple[Change, str | None, int]]:
    """History's transitions and the held changes, by time, each with its channel and rank.

    At equal times the stream's copy goes first, then history's, then the
    reconciliation's: each record names the path that saw the change first.
    """
    items = [(c, channel, _FROM_HISTORY) for c in transitions]
    items += [(c, ch, _FROM_STREAM if c.origin is Origin.STREAM else _READ) for c, ch in held]
    items.sort(key=lambda item: (item[0].changed_at, item[2]))
    return items


def _count(effects: Effects, gap: Gap, written: int, already: int, *, late: bool = False) -> None:
    gap.backfilled += written
    gap.late += written if late else 0
    if written:
        effects.count(Outcome.LATE if late else Outcome.WRITTEN, written)
    if already:
        effects.count(Outcome.ALREADY_WRITTEN, already)


#: Agents whose windows start further apart than this are queried separately.
SPREAD: Final = timedelta(seconds=QUERY_START_SPREAD_S)
#: Sort ranks of the changes released together at the same time.
_FROM_STREAM, _FROM_HISTORY, _READ = 0, 1, 2


class Backfill:
    """One shard's backfill decisions (see the module docstring). Not thread-safe; one per shard.

    :attr:`active` is False when no agent's backfill is pending: the shard's
    hot path tests only that before writing a change.
    """

    def __init__(
        self,
        config: BackfillConfig,
        effects: Effects,
        *,
        channel: Callable[[], str | None],
        state_of: Callable[[str], AgentState | None],
    ) -> None:
        self.config = config
        self.active = False
        self._effects = effects
        self._channel = channel
        self._window: tuple[Cause, datetime] | None = None
        self._gap: Gap | None = None
        self._agents: dict[str, AgentGap] = {}
        #: Agents released before their history was read, or taken over so (module docstring).
        self.marks: dict[str, Pending] = {}
        #: While a window is open (:attr:`active` then): what was written before its end.
        self._during = GapWrites(state_of, self.marks)

    # ------------------------------------------------------------------ windows

    @property
    def lookback(self) -> timedelta:
        return timedelta(seconds=self.config.max_lookback_s)

    def gap_started(self, cause: Cause, start: datetime) -> None:
        """A gap began at ``start`` (wall); an earlier unfinished start is kept."""
        if self.config.enabled and self._window is None:
            self._window = (cause, start)
            self.active = True

    def gap_ended(
        self,
        now: float,
        end: datetime,
        members: Iterable[str],
        state_of: Callable[[str], AgentState | None],
        starts: Mapping[str, datetime | None] | None = None,
        *,
        joined: bool = False,
        cause: Cause = Cause.RESUBSCRIBE,
    ) -> None:
        """The stream flows again at ``end``: hold ``members`` until their history is written.

        ``starts`` gives agents a ``from`` of their own (None: the whole
        lookback, the agent has no state): agents that just became observable
        are backfilled from their own last change. ``joined``: only agents
        added to a running shard (a gap under way stays pending); their gap's
        cause is ``cause`` (agents added, or found changed by the sweep).
        """
        window = None if joined else self._window
        self._window = self._window if joined else None
        if not self.config.enabled or (window is None and not starts):
            self.active = self._busy()
            return
        floor = end - self.lookback
        own = {user: floor if at is None else at for user, at in (starts or {}).items()}
        cause, start = window if window is not None else (cause, min(own.values()))
        gap = self._merge(now, cause, start, end)
        left: set[Gap] = set()
        for user in members:
            agent = self._agents.get(user)
            agent_start = max(own.get(user, start), floor)
            if agent is None:
                agent = self._during.new_agent(user, gap, agent_start, end, state_of, window is not None)
                self._agents[user] = agent
                if agent.marking:
                    self.marks[user] = agent
            else:
                if agent.gap is not gap:
                    left.add(agent.gap)
                agent.gap.open.discard(user)
                agent.gap.fell_back.discard(user)
                agent.gap, agent.start, agent.end = gap, min(agent.start, agent_start), end
                if agent.held is None:
                    agent.held = []
                agent.seen_after.clear()
                agent.known, agent.next_try, agent.retries, agent.forbidden = False, 0.0, 0, False
            gap.agents.add(user)
            gap.open.add(user)
        for old in left:
            self._maybe_report(old)
        if window is not None:
            self._during.clear()
        self.active = self._busy()

    def _busy(self) -> bool:
        return bool(self._agents) or self._window is not None

    def _merge(self, now: float, cause: Cause, start: datetime, end: datetime) -> Gap:
        floor, hold_until = end - self.lookback, now + self.config.hold_s
        self._gap = Gap.merged(self._gap, cause, start, end, floor=floor, hold_until=hold_until)
        return self._gap

    def forget(self, users: Collection[str]) -> None:
        """Agents left the shard: their backfill is dropped (they are tombstoned)."""
        for user in users:
            agent = self._agents.pop(user, None)
            self.marks.pop(user, None)
            if agent is not None:
                agent.gap.open.discard(user)
                agent.gap.agents.discard(user)
                self._maybe_report(agent.gap)
        self.active = self._busy()

    # ------------------------------------------------------------- changes

    def offer(self, change: Change, channel_id: str | None) -> bool:
        """A change for a member while :attr:`active`: hold it, or write it; True when written now."""
        agent = self._agents.get(change.user_id)
        if agent is None:
            window = self._window
            during = None if window is None else self._during.writing(change.user_id, window[1])
            written = self._effects.write(change, channel_id)
            if written is not None and during is not None:
                during[written] = None
            return written is not None
        agent.saw(change)
        if agent.held is not None:
            agent.held.append((change, channel_id))
            return False
        written = self._effects.write(change, channel_id)
        if written is not None:
            agent.written[written] = None
        return written is not None

    def reconciled(self, now: float, users: Iterable[str]) -> None:
        """The current states of ``users`` were read: release those whose history has nothing to add."""
        for user in users:
            agent = self._agents.get(user)
            if agent is None or agent.known:
                continue
            agent.known = True
            if all(agent.nothing_new(kind) for kind in Kind):
                self._release(agent, [], complete=True)
        self.active = self._busy()

    # ------------------------------------------------------------- history

    def due(self, now: float) -> list[HistoryQuery]:
        """The history queries to send now (agents with a target, incomplete, their retry time come).

        Agents whose windows start far apart go in separate queries (one long
        window would make every agent of the query read all of it).
        """
        chunks = _chunks(a for a in self._agents.values() if a.known and a.next_try <= now)
        return [HistoryQuery(tuple(a.user_id for a in chunk), chunk[0].start) for chunk in chunks]

    def history(
        self,
        now: float,
        wall: datetime,
        users: Iterable[str],
        found: Mapping[str, Sequence[Change]],
        *,
        start: datetime | None = None,
    ) -> QueryResult:
        """A history answer for ``users`` (``found``: user → its transitions, any order) from a
        query that began at ``start`` (:meth:`AgentGap.answered_by`: an older answer is not theirs)."""
        result = QueryResult.OK
        for user in users:
            agent = self._agents.get(user)
            if agent is None or not agent.answered_by(start):
                continue
            history = by_kind(found.get(user, ()))
            complete = all(agent.complete(kind, history[kind], wall) for kind in Kind)
            transitions = [c for kind in Kind for c in agent.transitions(kind, history[kind])]
            if complete:
                self._release(agent, transitions, complete=True)
                continue
            result = QueryResult.DELAYED
            if agent.held is None:
                self._write_late(agent, transitions, restate=True)
            agent.retry_later(now)
        self.active = self._busy()
        return result

    def failed(
        self, now: float, users: Iterable[str], reason: Fallback, *, start: datetime | None = None
    ) -> bool:
        """The history of ``users`` cannot be read (a query from ``start``): release them now, retry later.

        True when this is the gap's first fallback (the shard logs one warning per gap).
        """
        first = False
        for user in users:
            agent = self._agents.get(user)
            if agent is None or not agent.answered_by(start):
                continue
            gap = agent.gap
            if not gap.warned:
                gap.warned = first = True
            if gap.fallback is None:
                gap.fallback = reason
            gap.fell_back.add(user)
            agent.forbidden = reason is Fallback.FORBIDDEN
            if agent.held is not None:
                self._release(agent, [], complete=False)
            agent.retry_later(now)
            self._maybe_report(gap)
        self.active = self._busy()
        return first

    def tick(self, now: float, wall: datetime) -> None:
        """Release agents held past ``hold_s``; give up on those whose gap left the lookback
        (once their current state was read: before, their history was never asked, seed 806)."""
        for agent in list(self._agents.values()):
            if agent.held is not None and now >= agent.gap.hold_until:
                self._release(agent, [], complete=False)
            elif agent.held is None and agent.known and wall > self._deadline(agent):
                self._give_up(agent)
        self.active = self._busy()

    def unwritten(self, change: Change) -> bool:
        """A stale stream change may be written late: not already written for its pending agent."""
        agent = self._agents.get(change.user_id)
        return agent is None or agent.first(change.event_id)

    def held(self, user_id: str) -> bool:
        """The agent's changes are being held."""
        agent = self._agents.get(user_id)
        return agent is not None and agent.held is not None

    # ------------------------------------------------------------- internals

    def _deadline(self, agent: AgentGap) -> datetime:
        return max(agent.start + self.lookback, agent.end + timedelta(seconds=MIN_RETRY_WINDOW_S))

    def _release(self, agent: AgentGap, transitions: list[Change], *, complete: bool) -> None:
        """Apply the transitions and the held changes in time order; close the agent when complete."""
        held = agent.held or []
        agent.held = None
        if not complete and not agent.marking:
            agent.marking = True
            self.marks[agent.user_id] = agent
        late: list[Change] = []
        written = already = 0
        for change, channel_id, rank in _in_order(transitions, held, self._channel()):
            from_history = rank == _FROM_HISTORY
            if from_history and change.event_id in agent.written:
                already += 1
                continue
            event_id = self._effects.write(change, channel_id)
            if event_id is not None:
                agent.written[event_id] = None
                written += from_history
            elif from_history:
                late.append(change)
        _count(self._effects, agent.gap, written, already)
        self._write_late(agent, late)
        if complete:
            self._close(agent)

    def _write_late(self, agent: AgentGap, transitions: Iterable[Change], *, restate: bool = False) -> None:
        late = already = 0
        for change in transitions:
            if change.event_id in agent.written:
                already += 1
                continue
            agent.written[change.event_id] = None
            self._effects.write_late(change)
            late += 1
        if late and restate and agent.user_id in self.marks:
            self._effects.restate(agent.user_id)
        _count(self._effects, agent.gap, late, already, late=True)

    def _unmark(self, agent: AgentGap) -> None:
        """The agent's backfill is over: its state once more, without the pending mark."""
        if self.marks.pop(agent.user_id, None) is not None:
            self._effects.restate(agent.user_id)

    def _close(self, agent: AgentGap) -> None:
        self._agents.pop(agent.user_id, None)
        self._unmark(agent)
        agent.gap.open.discard(agent.user_id)
        agent.gap.fell_back.discard(agent.user_id)
        self._maybe_report(agent.gap)

    def _give_up(self, agent: AgentGap) -> None:
        if agent.gap.fallback is None:
            agent.gap.fallback = Fallback.UNAVAILABLE
        agent.gap.gave_up = True
        self._close(agent)

    def _maybe_report(self, gap: Gap) -> None:
        """Report a gap once all its agents are settled; again when a later retry recovers it."""
        report = gap.report()
        if report is not None:
            self._effects.write_gap(report)
            if self._gap is gap and report.recovered:
                self._gap = None
