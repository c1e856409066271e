"""Domain types shared by every layer: a change, its value, an agent's state.

Plain dataclasses with slots: they are created for every frame on the hot
path, so they stay cheap; the pydantic models in :mod:`bridge.records`
describe the Kafka encoding of the same data.

They are values: never mutate one after it is built; make a new one
(:meth:`Change.evolve`). They are not ``frozen=True`` only because a frozen
dataclass sets every field through ``object.__setattr__``, which made
building a ``Change`` five times slower (2.3 µs against 0.45 µs), several
objects per change (``tests/bench/bench_hotpath.py``).

The change's stable id (:func:`event_id`), the time format every record uses
(:func:`format_time`) and the millisecond wall clock (:func:`utc_now_ms`) live
here too: the Genesys layer stamps ids and the shard reads the clock without
importing the Kafka record models of :mod:`bridge.records`.
"""

from __future__ import annotations

import enum
import hashlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

__all__ = [
    "SYSTEM_PRESENCES",
    "AgentState",
    "Change",
    "Kind",
    "Origin",
    "PendingBackfill",
    "PresenceValue",
    "RoutingValue",
    "VersionedPresence",
    "VersionedRouting",
    "clear_time_cache",
    "event_id",
    "format_time",
    "known_time",
    "utc_now_ms",
]

#: A change's time is formatted for its event id, its event record and the
#: agent's state record (which repeats the other kind's last time too): a
#: cache of recent times turns those repeats into lookups.
TIME_CACHE_SIZE = 16_384
#: Lengths of ``YYYY-MM-DDTHH:MM:SS.mmm`` and ``YYYY-MM-DDTHH:MM:SS``.
_ISO_MS_LENGTH = 23
_ISO_SECONDS_LENGTH = 19

#: Genesys system presences, normalised to upper snake case.
SYSTEM_PRESENCES = frozenset(
    {
        "AVAILABLE",
        "AWAY",
        "BREAK",
        "BUSY",
        "IDLE",
        "MEAL",
        "MEETING",
        "OFFLINE",
        "ON_QUEUE",
        "TRAINING",
    }
)


class Kind(enum.StrEnum):
    """What changed."""

    PRESENCE = "presence"
    ROUTING_STATUS = "routing_status"


class Origin(enum.StrEnum):
    """How the bridge learned of a change."""

    STREAM = "stream"
    RECONCILE = "reconcile"
    BACKFILL = "backfill"
    """Read from Genesys's analytics history after a gap (:mod:`bridge.genesys.history`)."""


@dataclass(slots=True)
class PresenceValue:
    """An agent's presence as Genesys reports it (``systemPresence`` normalised)."""

    system_presence: str
    presence_definition_id: str | None = None
    message: str | None = None
    source: str | None = None
    primary: bool | None = None
    presence_label: str | None = None

    def same_as(self, other: PresenceValue) -> bool:
        """Equal in what Genesys reported (the label is our enrichment)."""
        return (
            self.system_presence == other.system_presence
            and self.presence_definition_id == other.presence_definition_id
            and (self.message or "") == (other.message or "")
        )


@dataclass(slots=True)
class RoutingValue:
    """An agent's routing status: OFF_QUEUE, IDLE, INTERACTING, NOT_RESPONDING, COMMUNICATING."""

    status: str

    def same_as(self, other: RoutingValue) -> bool:
        return self.status == other.status


@dataclass(slots=True)
class Change:
    """One change of one agent, from the stream or from a reconciliation.

    ``timestamp_known`` is False when Genesys sent no timestamp and
    ``changed_at`` is the receive time (Genesys's own published presence
    sample has no ``modifiedDate``). ``received_at`` is a monotonic clock
    reading taken when the frame arrived, for the delivery-latency metric.
    """

    user_id: str
    kind: Kind
    changed_at: datetime
    value: PresenceValue | RoutingValue
    observed_at: datetime
    origin: Origin
    event_id: str = ""
    timestamp_known: bool = True
    correlation_id: str | None = None
    genesys_topic: str | None = None
    received_at: float = 0.0

    def evolve(
        self,
        *,
        value: PresenceValue | RoutingValue | None = None,
        changed_at: datetime | None = None,
        event_id: str | None = None,
    ) -> Change:
        """A copy with ``value``, ``changed_at`` or ``event_id`` replaced.

        ``dataclasses.replace`` does the same about five times slower; this runs
        for most presence changes (label enrichment).
        """
        return Change(
            self.user_id,
            self.kind,
            self.changed_at if changed_at is None else changed_at,
            self.value if value is None else value,
            self.observed_at,
            self.origin,
            self.event_id if event_id is None else event_id,
            self.timestamp_known,
            self.correlation_id,
            self.genesys_topic,
            self.received_at,
        )


@dataclass(slots=True)
class AgentState:
    """The last known presence and routing status of one agent."""

    user_id: str
    presence: VersionedPresence | None = None
    routing: VersionedRouting | None = None
    pending: PendingBackfill | None = None
    """Read from Kafka only: the writer had not finished backfilling this agent (see
    :class:`PendingBackfill`); states the shard accepts never carry it."""


@dataclass(frozen=True, slots=True)
class PendingBackfill:
    """An agent's backfill that was still pending when its state was written.

    A shard that releases an agent's changes before its history is read
    (the hold expired, history unavailable) marks every state it writes for
    the agent with this until the backfill is done, then writes the state
    once more without it. A new owner that loads a marked state backfills
    each kind from its ``*_from`` (the writer's own window) instead of the
    state's ``changed_at``, skipping ``written``: every eventId the writer
    wrote for the agent since that window began. ``end`` is when the
    writer's stream flowed again.
    """

    presence_from: datetime
    routing_from: datetime
    end: datetime
    written: tuple[str, ...]


@dataclass(slots=True)
class VersionedPresence:
    """A presence with the Genesys time it took effect and the id of that change."""

    value: PresenceValue
    changed_at: datetime
    event_id: str


@dataclass(slots=True)
class VersionedRouting:
    """A routing status with the Genesys time it took effect and the id of that change."""

    value: RoutingValue
    changed_at: datetime
    event_id: str


# --------------------------------------------------------------------------- times and ids

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: An empty BLAKE2b of the event id's size, copied for every id.
_EVENT_ID_HASH = hashlib.blake2b(digest_size=16)
_now_ms: tuple[int, datetime] = (-1, _EPOCH)


def utc_now_ms() -> datetime:
    """The wall clock (aware UTC) truncated to the millisecond the records carry.

    The same object for every call within one millisecond, so the per-change
    ``observedAt`` and ``updatedAt`` times hit :func:`format_time`'s cache at
    high rates instead of being formatted anew. Safe from any thread: the
    cache is one tuple, replaced whole.
    """
    global _now_ms  # noqa: PLW0603 - a one-entry cache
    ms = time.time_ns() // 1_000_000
    cached = _now_ms
    if cached[0] == ms:
        return cached[1]
    now = _EPOCH + timedelta(milliseconds=ms)
    _now_ms = (ms, now)
    return now


_times: dict[datetime, str] = {}


def format_time(value: datetime) -> str:
    """ISO-8601 UTC with milliseconds and a ``Z``, as Genesys writes times.

    Runs several times per change on the hot path (event id, event record,
    state record), so the texts of recent times are kept (at most
    :data:`TIME_CACHE_SIZE`, then forgotten all at once), and the parser
    hands over the text of a time Genesys already wrote this way
    (:func:`known_time`). orjson writes a datetime as
    ``"YYYY-MM-DDTHH:MM:SS.ffffff…"`` (no fraction when the microseconds are
    0) about three times faster than ``isoformat(timespec=…)``, whose keyword
    parsing dominates its cost; the quoted text is cut to milliseconds
    (truncated, as ``isoformat`` does).
    """
    text = _times.get(value)
    if text is None:
        raw = orjson.dumps(value)
        if value.microsecond:
            text = raw[1 : 1 + _ISO_MS_LENGTH].decode() + "Z"
        else:
            text = raw[1 : 1 + _ISO_SECONDS_LENGTH].decode() + ".000Z"
        known_time(value, text)
    return text


def known_time(value: datetime, text: str) -> None:
    """Remember that ``text`` is ``format_time(value)``; the caller vouches for it."""
    if len(_times) >= TIME_CACHE_SIZE:
        _times.clear()
    _times[value] = text


def clear_time_cache() -> None:
    """Forget every remembered time text (for tests)."""
    _times.clear()


def event_id(user_id: str, kind: Kind, changed_at: datetime, value: PresenceValue | RoutingValue) -> str:
    """Stable id of one change: the same user, kind, time and value give the same id.

    The label is left out: it is enrichment, not part of what Genesys reported.
    The presence message is left out too: Genesys's analytics history (the
    backfill's source) has no message, and the id must be the same whichever
    path (stream, reconciliation, backfill) wrote the change. A message-only
    change still gets its own id: Genesys gives it a new ``modifiedDate``.
    """
    if isinstance(value, RoutingValue):
        canonical = value.status
    else:
        canonical = f"{value.system_presence}|{value.presence_definition_id or ''}"
    raw = f"{user_id}|{kind}|{format_time(changed_at)}|{canonical}".encode()
    hasher = _EVENT_ID_HASH.copy()  # cheaper than a new one with its keyword arguments
    hasher.update(raw)
    return hasher.hexdigest()
