"""Domain types shared by every layer: a change, its value, an agent's state.

Plain dataclasses with slots: they are created for every frame on the hot
path, so they stay cheap; the pydantic models in :mod:`bridge.records`
describe the Kafka encoding of the same data.

They are values: never mutate one after it is built; make a new one
(:meth:`Change.evolve`). They are not ``frozen=True`` only because a frozen
dataclass sets every field through ``object.__setattr__``, which made
building a ``Change`` five times slower (2.3 µs against 0.45 µs), several
objects per change (``tests/bench/bench_hotpath.py``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

__all__ = [
    "SYSTEM_PRESENCES",
    "AgentState",
    "Change",
    "Kind",
    "Origin",
    "PresenceValue",
    "RoutingValue",
    "VersionedPresence",
    "VersionedRouting",
]

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
