"""The backfill's vocabulary and its per-agent rule, sans-I/O: gaps, agents, what Kafka lacks.

:mod:`bridge.genesys.backfill` decides when to hold, release and report; this
module holds the types it shares with the shard-side :mod:`bridge.backfill`
and the rule for one agent of one gap (:class:`AgentGap`):

- **since**: at the gap's end, the agent's last accepted change per kind.
- **transitions** (:meth:`AgentGap.transitions`): a history transition is
  written iff its ``changed_at`` is after ``since`` (after the agent's
  ``from`` when it has no state of that kind), at or before the ``target``,
  and its value differs from the previous one (a record Genesys's storage
  split in two is not a change). A presence's message is not part of the
  value: analytics does not record it.
- **target**: the ``changed_at`` of the agent's current state as read from
  Genesys after the gap's end (the reconciliation); the history must reach it.
- **completeness** (:meth:`AgentGap.complete`): analytics lags (its answer
  lacks the youngest changes, and the interval before them looks open); per
  kind the history is complete when ``target`` is not after ``since``
  (nothing changed), when it holds an interval starting at the target, or at
  a change of the agent seen after the gap's end (analytics holds everything
  older than what it shows, so nothing of the gap is missing). A presence
  change of the message alone starts no analytics interval: when the last
  interval has the target's value and the target is
  :data:`MESSAGE_ONLY_SETTLE_S` old, the history is complete too.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final, Protocol

from bridge.genesys.history import MAX_USERS_PER_QUERY
from bridge.model import AgentState, Change, Kind, Origin, PendingBackfill, PresenceValue, RoutingValue
from bridge.records import GapRecord, Pending

__all__ = [
    "DELAYED_RETRY_S",
    "FORBIDDEN_RETRY_MAX_S",
    "GAP_MARGIN",
    "HISTORY_MAX_USERS",
    "MAX_PENDING_IDS",
    "MESSAGE_ONLY_SETTLE_S",
    "MIN_RETRY_WINDOW_S",
    "QUERY_START_SPREAD_S",
    "RETRY_INITIAL_S",
    "RETRY_MAX_S",
    "AgentGap",
    "BackfillConfig",
    "Cause",
    "Effects",
    "Fallback",
    "Gap",
    "GapReport",
    "GapSink",
    "GapWrites",
    "Held",
    "HistoryQuery",
    "Outcome",
    "QueryResult",
    "by_kind",
    "oldest_change",
    "same_value",
    "transitions_after",
]

#: ``from`` is moved back by this much: the last frame seen is not the last change sent.
GAP_MARGIN: Final = timedelta(seconds=1)
#: Analytics had not caught up with an agent's target yet: ask again this much later.
DELAYED_RETRY_S: Final = 1.5
#: Retries after the hold or after a fallback back off from this …
RETRY_INITIAL_S: Final = 1.0
#: … to this, doubling (a history that failed for a few seconds is read again soon).
RETRY_MAX_S: Final = 10.0
#: A refused history (missing permission) is asked again at most this rarely.
FORBIDDEN_RETRY_MAX_S: Final = 60.0
#: Retries go on at least this long after the gap's end, even for a gap at the lookback's edge.
MIN_RETRY_WINDOW_S: Final = 60.0
#: A presence target that is a message-only change is taken as reached once this old.
MESSAGE_ONLY_SETTLE_S: Final = 30.0
#: Agents whose windows start further apart than this are queried separately (agents are
#: grouped by start first, so a takeover's agents, each from its own last change, need few queries).
QUERY_START_SPREAD_S: Final = 600.0
#: userId predicates per history query.
HISTORY_MAX_USERS: Final = MAX_USERS_PER_QUERY


class Cause(enum.StrEnum):
    """Why the stream had a gap (``cause`` of a gap record)."""

    RECONNECT = "reconnect"
    HANDOVER = "handover"
    ROTATION = "rotation"
    START = "start"
    TAKEOVER = "takeover"
    RESUBSCRIBE = "resubscribe"
    SWEEP = "sweep"
    """The sweep found an agent's state changed without the stream saying so (a silent loss)."""


class Fallback(enum.StrEnum):
    """Why a gap was not (fully) backfilled (``fallback`` of a gap record)."""

    FORBIDDEN = "forbidden"
    UNAVAILABLE = "unavailable"
    BUDGET = "budget"
    TOO_OLD = "too_old"


class Outcome(enum.StrEnum):
    """What became of one history transition (``bridge_backfill_records_total{outcome}``)."""

    WRITTEN = "written"
    LATE = "late"
    ALREADY_WRITTEN = "already_written"


class QueryResult(enum.StrEnum):
    """How one history query went (``bridge_backfill_queries_total{result}``)."""

    OK = "ok"
    DELAYED = "delayed"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class BackfillConfig:
    """The backfill's settings as plain values."""

    enabled: bool
    hold_s: float
    max_lookback_s: float


@dataclass(frozen=True, slots=True)
class GapReport:
    """One gap's outcome, to be written as a gap record."""

    cause: Cause
    start: datetime
    end: datetime
    agents: int
    backfilled: int
    late: int
    recovered: bool
    fallback: Fallback | None
    first: bool = True
    """The gap's first report (a second one says a gap reported unrecovered was recovered)."""


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """Read the history of ``users`` from ``start`` to now."""

    users: tuple[str, ...]
    start: datetime


class Effects(Protocol):
    """What the decisions make the shard do (the shard-side :mod:`bridge.backfill`)."""

    def write(self, change: Change, channel_id: str | None, /) -> str | None:
        """Order and write ``change`` (event + state); its eventId if written, None if dropped."""

    def write_late(self, change: Change, /) -> None:
        """Write ``change`` to its event topic only, flagged late (never to the compacted state)."""

    def write_gap(self, report: GapReport, /) -> None:
        """Write a gap record (and observe its length on a first report)."""

    def count(self, outcome: Outcome, n: int, /) -> None:
        """Count ``n`` history transitions with this outcome."""

    def restate(self, user_id: str, /) -> None:
        """Write the agent's current state again (its mark as it is now: new eventIds, or none)."""


#: A pending state names at most this many eventIds (the newest): an agent
#: changing more often than that while its history is unavailable may see
#: its oldest ones written twice by a new owner.
MAX_PENDING_IDS: Final = 200


class GapSink(Protocol):
    """The sink's writes the backfill makes besides ordinary changes (:class:`bridge.sink.ShardSink`)."""

    pending_backfills: Mapping[str, Pending]

    def submit_late(self, change: Change, channel_id: str | None, /) -> None: ...
    def submit_gap(self, gap: GapRecord, /) -> None: ...
    def submit_state(self, state: AgentState, /) -> None: ...
    def atomic(self) -> AbstractContextManager[None]: ...


#: A change held while its agent's backfill is pending, with the channel it came from.
Held = tuple[Change, str | None]


class _Before:
    """An agent written in an open gap: its state before, the gap's start, what was written."""

    __slots__ = ("start", "state", "written")

    def __init__(self, state: AgentState | None, start: datetime) -> None:
        self.state = state
        self.start = start
        self.written: dict[str, None] = {}

    def pending(self) -> PendingBackfill:
        """What its state records say meanwhile: each kind may lack what followed its last change
        before the gap (or the gap's start), the eventIds written since are not to be written again."""
        return PendingBackfill(
            self._from(Kind.PRESENCE),
            self._from(Kind.ROUTING_STATUS),
            self.start,
            tuple(self.written)[-MAX_PENDING_IDS:],
        )

    def _from(self, kind: Kind) -> datetime:
        state = self.state
        if state is None:
            return self.start
        last = state.presence if kind is Kind.PRESENCE else state.routing
        times = [self.start if last is None else last.changed_at]
        if state.pending is not None:
            inherited = state.pending
            times.append(inherited.presence_from if kind is Kind.PRESENCE else inherited.routing_from)
        return min(times)


class GapWrites:
    """Changes written while a gap is open, before it ends, per agent: the state before the first.

    A replacement channel (a rotation, a hand-over) delivers its agents'
    changes as it subscribes them, before the gap ends. Such a change moves
    the agent's last state past changes the gap lost (the old channel no
    longer sent them, the new one did not yet): its backfill must start from
    the state the agent had before (seeds 932, 933: an IDLE lost 1 ms before
    an INTERACTING so delivered). :meth:`new_agent` starts it there, with the
    eventIds written meanwhile (not written again). Until the gap ends such an
    agent is in the shard's ``marks`` (:meth:`writing`): its state records
    carry the window, so a new owner taking the shard over meanwhile backfills
    it from there too.
    """

    __slots__ = ("_before", "_marks", "_state_of")

    def __init__(self, state_of: Callable[[str], AgentState | None], marks: dict[str, Pending]) -> None:
        self._state_of = state_of
        self._marks = marks
        self._before: dict[str, _Before] = {}

    def writing(self, user_id: str, start: datetime) -> dict[str, None]:
        """The agent's change is about to be written in the gap open since ``start``: its eventIds
        so far (the caller adds the new one); the agent is marked from now on."""
        entry = self._before.get(user_id)
        if entry is None:
            entry = self._before[user_id] = _Before(self._state_of(user_id), start)
            self._marks.setdefault(user_id, entry)
        return entry.written

    def new_agent(  # noqa: PLR0917 - AgentGap.new's arguments, and where the state comes from
        self,
        user_id: str,
        gap: Gap,
        start: datetime,
        end: datetime,
        state_of: Callable[[str], AgentState | None],
        closing: bool,
    ) -> AgentGap:
        """The agent entering ``gap``; when ``closing`` that open gap and changes of the agent were
        written in it, from its state before them, those eventIds written, and marked."""
        entry = self._before.get(user_id) if closing else None
        if entry is None:
            return AgentGap.new(user_id, gap, start, end, state_of(user_id))
        agent = AgentGap.new(user_id, gap, start, end, entry.state)
        agent.written.update(entry.written)
        agent.marking = True
        return agent

    def clear(self) -> None:
        """The gap ended: its entries leave the marks (an agent's own backfill marks it now)."""
        marks = self._marks
        for user_id, entry in self._before.items():
            if marks.get(user_id) is entry:
                del marks[user_id]
        self._before.clear()


@dataclass(eq=False)
class Gap:
    """One gap of a shard (merged with those that ended while it was being backfilled)."""

    cause: Cause
    start: datetime
    end: datetime
    hold_until: float
    """Monotonic time at which every still-held agent is released."""
    agents: set[str] = field(default_factory=set)
    open: set[str] = field(default_factory=set)
    """Agents whose backfill is not finished."""
    fell_back: set[str] = field(default_factory=set)
    """Open agents whose history could not be read (retried in the background)."""
    backfilled: int = 0
    late: int = 0
    fallback: Fallback | None = None
    reported: bool | None = None
    """None: not reported yet; False: reported unrecovered; True: reported recovered."""
    gave_up: bool = False
    warned: bool = False

    @classmethod
    def merged(
        cls,
        gap: Gap | None,
        cause: Cause,
        start: datetime,
        end: datetime,
        *,
        floor: datetime,
        hold_until: float,
    ) -> Gap:
        """``gap`` grown to end at ``end`` (its start and cause kept), or a new gap when there is none
        open; ``from`` is clamped to ``floor`` (the lookback), and a gap older than that is too old."""
        if gap is None or gap.reported is True or not gap.open:
            gap = cls(cause, max(start, floor), end, hold_until)
        else:
            gap.start, gap.end, gap.hold_until = min(gap.start, max(start, floor)), end, hold_until
        if start < floor:
            gap.fallback = Fallback.TOO_OLD
        return gap

    def report(self) -> GapReport | None:
        """The gap's report when every agent is settled (complete or fallen back), once unrecovered
        and once recovered; None when there is nothing (new) to report."""
        if self.reported is True or self.open - self.fell_back:
            return None
        recovered = not self.open and not self.gave_up and self.fallback is not Fallback.TOO_OLD
        if not recovered and self.reported is False:
            return None
        first, self.reported = self.reported is None, recovered
        fallback = None if recovered else self.fallback
        agents = len(self.agents)
        return GapReport(
            self.cause, self.start, self.end, agents, self.backfilled, self.late, recovered, fallback, first
        )


@dataclass(eq=False)
class AgentGap:
    """One agent's pending backfill (module rules)."""

    user_id: str
    gap: Gap
    start: datetime
    end: datetime
    since: dict[Kind, tuple[datetime, PresenceValue | RoutingValue] | None]
    held: list[Held] | None = field(default_factory=list)
    """Changes held in arrival order; None once released."""
    written: dict[str, None] = field(default_factory=dict)
    """EventIds written for the agent since its gap began (in writing order)."""
    inherited: dict[Kind, datetime] | None = None
    """The previous writer's pending window per kind (a marked state was loaded), or None."""
    marking: bool = False
    """Released before its history was read: its state records carry :meth:`pending`."""
    target: dict[Kind, Change] = field(default_factory=dict)
    seen_after: dict[Kind, set[datetime]] = field(default_factory=dict)
    known: bool = False
    """Its current state was read after the gap's end."""
    next_try: float = 0.0
    retries: int = 0
    forbidden: bool = False

    @classmethod
    def new(
        cls, user_id: str, gap: Gap, start: datetime, end: datetime, state: AgentState | None
    ) -> AgentGap:
        """An agent entering ``gap`` with its last state ``state`` as its ``since``."""
        presence = state.presence if state is not None else None
        routing = state.routing if state is not None else None
        since: dict[Kind, tuple[datetime, PresenceValue | RoutingValue] | None] = {
            Kind.PRESENCE: (presence.changed_at, presence.value) if presence is not None else None,
            Kind.ROUTING_STATUS: (routing.changed_at, routing.value) if routing is not None else None,
        }
        agent = cls(user_id, gap, start, end, since)
        pending = state.pending if state is not None else None
        if pending is not None:
            agent.inherit(pending, [v.event_id for v in (presence, routing) if v is not None])
        return agent

    def inherit(self, pending: PendingBackfill, loaded: Iterable[str]) -> None:
        """The loaded state says its writer had not finished this agent's backfill: take it over.

        Each kind is backfilled from the writer's window (not the state's
        time); what the writer wrote since (``pending.written``, and the
        loaded state's own changes) is not written again.
        """
        self.inherited = {Kind.PRESENCE: pending.presence_from, Kind.ROUTING_STATUS: pending.routing_from}
        self.written.update(dict.fromkeys(pending.written))
        self.written.update(dict.fromkeys(loaded))
        self.marking = True

    def pending(self) -> PendingBackfill:
        """What this agent's state records say while :attr:`marking` (see :class:`PendingBackfill`)."""
        return PendingBackfill(
            self._floor(Kind.PRESENCE),
            self._floor(Kind.ROUTING_STATUS),
            self.end,
            tuple(self.written)[-MAX_PENDING_IDS:],
        )

    def saw(self, change: Change) -> None:
        """A change of the agent arrived after the gap's end (a current state read, or the stream)."""
        if change.origin is not Origin.STREAM:
            last = self.target.get(change.kind)
            if last is None or change.changed_at >= last.changed_at:
                self.target[change.kind] = change
        if change.changed_at >= self.end:
            self.seen_after.setdefault(change.kind, set()).add(change.changed_at)

    def first(self, event_id: str) -> bool:
        """True (and remembered) when ``event_id`` was not written for the agent since its gap began."""
        if event_id in self.written:
            return False
        self.written[event_id] = None
        return True

    def answered_by(self, start: datetime | None) -> bool:
        """A history query from ``start`` still speaks for this agent (None: the caller knows it does).

        A later gap that merged while the query was out re-armed the agent
        (seed 703): its window may now start earlier, and until its current
        state is read again its target is the old gap's, which a history
        read before the merge reaches; that answer would close the agent
        and the new gap's transitions would never be asked for. So it is
        not the agent's: neither its success nor its failure counts.
        """
        return start is None or (self.known and self.start >= start)

    def retry_later(self, now: float) -> None:
        """Its history is incomplete or failed: ask again soon while held, else with backoff."""
        if self.held is not None and now < self.gap.hold_until and not self.forbidden:
            self.next_try = now + DELAYED_RETRY_S
            return
        cap = FORBIDDEN_RETRY_MAX_S if self.forbidden else RETRY_MAX_S
        self.next_try = now + min(cap, RETRY_INITIAL_S * 2**self.retries)
        self.retries += 1

    def _floor(self, kind: Kind) -> datetime:
        since = self.since[kind]
        own = since[0] if since is not None else self.start
        inherited = self.inherited
        return own if inherited is None else min(own, inherited[kind])

    def nothing_new(self, kind: Kind) -> bool:
        """The current state of ``kind`` is not after ``since``: nothing changed in the gap."""
        target = self.target.get(kind)
        return target is None or target.changed_at <= self._floor(kind)

    def complete(self, kind: Kind, history: list[Change], wall: datetime) -> bool:
        """The history of ``kind`` (sorted) reaches what Kafka must have (module rules)."""
        if self.nothing_new(kind):
            return True
        target = self.target[kind]
        starts = {c.changed_at for c in history}
        if target.changed_at in starts or not starts.isdisjoint(self.seen_after.get(kind, ())):
            return True
        return (
            kind is Kind.PRESENCE
            and bool(history)
            and same_value(history[-1].value, target.value)
            and history[-1].changed_at < target.changed_at
            and (wall - target.changed_at).total_seconds() >= MESSAGE_ONLY_SETTLE_S
        )

    def transitions(self, kind: Kind, history: list[Change]) -> list[Change]:
        """The history transitions of ``kind`` (sorted) that Kafka may lack (module rules)."""
        since = self.since[kind]
        floor = self._floor(kind)
        target = self.target.get(kind)
        # An inherited window reaches before ``since``: its first value is history's own.
        previous = since[1] if since is not None and self.inherited is None else None
        out: list[Change] = []
        for change in history:
            at = change.changed_at
            real = previous is None or not same_value(previous, change.value)
            previous = change.value
            if at <= floor or not real:
                continue
            if target is None or at > target.changed_at:
                break
            out.append(change)
        return out


def by_kind(changes: Iterable[Change]) -> dict[Kind, list[Change]]:
    """Per kind, sorted by time, with repeats (same time and value) dropped."""
    out: dict[Kind, list[Change]] = {kind: [] for kind in Kind}
    for change in sorted(changes, key=lambda c: c.changed_at):
        same_kind = out[change.kind]
        if (
            same_kind
            and same_kind[-1].changed_at == change.changed_at
            and same_value(same_kind[-1].value, change.value)
        ):
            continue
        same_kind.append(change)
    return out


def same_value(a: PresenceValue | RoutingValue, b: PresenceValue | RoutingValue) -> bool:
    """The same value as analytics records it (a presence's message is not part of it)."""
    if isinstance(a, PresenceValue):
        return (
            isinstance(b, PresenceValue)
            and a.system_presence == b.system_presence
            and a.presence_definition_id == b.presence_definition_id
        )
    return isinstance(b, RoutingValue) and a.status == b.status


def transitions_after(state: AgentState | None, history: Sequence[Change]) -> list[Change]:
    """The transitions of ``history`` (sorted) after ``state``'s last change of their kind."""
    last: dict[Kind, tuple[datetime, PresenceValue | RoutingValue] | None] = {
        Kind.PRESENCE: None
        if state is None or state.presence is None
        else (state.presence.changed_at, state.presence.value),
        Kind.ROUTING_STATUS: None
        if state is None or state.routing is None
        else (state.routing.changed_at, state.routing.value),
    }
    out: list[Change] = []
    for change in history:
        known = last[change.kind]
        if known is not None and (change.changed_at <= known[0] or same_value(known[1], change.value)):
            continue
        last[change.kind] = (change.changed_at, change.value)
        out.append(change)
    return out


def oldest_change(state: AgentState | None) -> datetime | None:
    """The older ``changed_at`` of an agent's presence and routing status (None without either),
    or the start of the window its loaded state says is pending, if older."""
    if state is None:
        return None
    times = [v.changed_at for v in (state.presence, state.routing) if v is not None]
    if state.pending is not None:
        times += [state.pending.presence_from, state.pending.routing_from]
    return min(times) if times else None
