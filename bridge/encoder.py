"""The records of one shard's submissions: topics, keys, contract headers, values (:mod:`bridge.sink`).

An :class:`Item` is what commits together (an event and its agent's state,
or everything submitted under :meth:`bridge.sink.ShardSink.atomic`), with
what the metrics need after the commit. :class:`Encoder` builds them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from bridge.events import Accepted
from bridge.kafka.writer import Headers, Record
from bridge.model import AgentState, Change, Kind, PendingBackfill
from bridge.records import (
    DLQ_SCHEMA,
    GAP_SCHEMA,
    PRESENCE_SCHEMA,
    ROUTING_STATUS_SCHEMA,
    STATE_SCHEMA,
    GapRecord,
    Pending,
    encode_change,
    encode_dlq,
    encode_event,
    encode_gap,
    encode_state,
    event_type,
)
from bridge.settings import Settings

__all__ = ["DLQ_EVENT_TYPE", "GAP_EVENT_TYPE", "STATE_EVENT_TYPE", "Encoder", "Item"]

STATE_EVENT_TYPE = "agent-state"
_STATE_HEADERS = (("schema", STATE_SCHEMA.encode()), ("event-type", STATE_EVENT_TYPE.encode()))
DLQ_EVENT_TYPE = "dlq"
GAP_EVENT_TYPE = "gap"
# Looked up for every change: an enum member's attribute access costs ~10x a global's.
_PRESENCE = Kind.PRESENCE


@dataclass(slots=True)
class Item:
    """Records that must commit together, plus what the metrics need after the commit."""

    records: list[Record]
    received_at: float = 0.0
    """The change's ``received_at`` (monotonic; 0: none), for the delivery-latency metric."""
    changed_at: datetime | None = None
    """The change's time, for the lag metric (None: not a change)."""
    dlq_reason: str | None = None
    parts: tuple[Item, ...] = ()
    """Items submitted together under :meth:`ShardSink.atomic` (this one holds their records)."""


class Encoder:
    """The records of one shard's submissions: topics, keys, contract headers, values."""

    def __init__(self, settings: Settings, shard: int, clock: Callable[[], datetime]) -> None:
        self._settings = settings
        self._shard = shard
        self._clock = clock
        self._topics = {
            Kind.PRESENCE: settings.topic_presence,
            Kind.ROUTING_STATUS: settings.topic_routing_status,
        }
        schemas = {Kind.PRESENCE: PRESENCE_SCHEMA, Kind.ROUTING_STATUS: ROUTING_STATUS_SCHEMA}
        # Encoded once: these headers are the same on every record of a kind.
        self._bridge_id = ("bridge-id", settings.id.encode())
        self._event_headers = {
            kind: (("schema", schema.encode()), ("event-type", event_type(kind).encode()), self._bridge_id)
            for kind, schema in schemas.items()
        }
        self._state_headers: Headers = [*_STATE_HEADERS, self._bridge_id]
        # Read for every change: attributes, not enum-keyed dict lookups.
        self._presence_headers = self._event_headers[Kind.PRESENCE]
        self._routing_headers = self._event_headers[Kind.ROUTING_STATUS]
        self._presence_topic = settings.topic_presence
        self._routing_topic = settings.topic_routing_status
        self._state_topic = settings.topic_agent_state
        self._shard_key = str(shard).encode()
        self._gap_key = f"shard-{shard}".encode()
        self._gap_headers: Headers = [
            ("schema", GAP_SCHEMA.encode()),
            ("event-type", GAP_EVENT_TYPE.encode()),
            self._bridge_id,
        ]
        self.pending: Mapping[str, Pending] = {}

    def change(self, accepted: Accepted, channel_id: str | None) -> Item:
        change = accepted.change
        key = change.user_id.encode()
        presence = change.kind is _PRESENCE
        schema, kind, bridge_id = self._presence_headers if presence else self._routing_headers
        topic = change.genesys_topic
        if change.correlation_id is not None:
            correlation = ("correlation-id", change.correlation_id.encode())
            if topic is not None:  # what the stream's frames carry
                headers = [schema, kind, bridge_id, ("genesys-topic", topic.encode()), correlation]
            else:
                headers = [schema, kind, bridge_id, correlation]
            state_headers: Headers = [*self._state_headers, correlation]
        else:
            headers = [schema, kind, bridge_id]
            if topic is not None:
                headers.append(("genesys-topic", topic.encode()))
            state_headers = [*self._state_headers]
        event, state = encode_change(
            change, accepted.state, self._shard, channel_id, self._clock(), pending=self._mark(change.user_id)
        )
        return Item(
            [
                (self._presence_topic if presence else self._routing_topic, key, event, headers),
                (self._state_topic, key, state, state_headers),
            ],
            change.received_at,
            change.changed_at,
        )

    def late(self, change: Change, channel_id: str | None) -> Item:
        headers: Headers = list(self._event_headers[change.kind])
        if change.genesys_topic is not None:
            headers.append(("genesys-topic", change.genesys_topic.encode()))
        if change.correlation_id is not None:
            headers.append(("correlation-id", change.correlation_id.encode()))
        value = encode_event(change, self._shard, channel_id, late=True)
        return Item(
            [(self._topics[change.kind], change.user_id.encode(), value, headers)],
            change.received_at,
            change.changed_at,
        )

    def _mark(self, user_id: str) -> PendingBackfill | None:
        """The ``backfill`` field of the agent's state records (None: its backfill is not pending)."""
        pending = self.pending
        return pending[user_id].pending() if pending and user_id in pending else None

    def state(self, state: AgentState) -> Item:
        value = encode_state(state, self._shard, self._clock(), self._mark(state.user_id))
        return Item([(self._state_topic, state.user_id.encode(), value, list(self._state_headers))])

    def gap(self, gap: GapRecord) -> Item:
        return Item([(self._settings.topic_gaps, self._gap_key, encode_gap(gap), list(self._gap_headers))])

    def tombstone(self, user_id: str) -> Item:
        return Item([(self._settings.topic_agent_state, user_id.encode(), None, list(self._state_headers))])

    def dlq(self, reason: str, error: str, frame: str, channel_id: str | None) -> Item:
        value = encode_dlq(
            shard=self._shard,
            channel_id=channel_id,
            reason=reason,
            error=error,
            frame=frame,
            observed_at=self._clock(),
        )
        headers: Headers = [
            ("schema", DLQ_SCHEMA.encode()),
            ("event-type", DLQ_EVENT_TYPE.encode()),
            self._bridge_id,
        ]
        return Item([(self._settings.topic_dlq, self._shard_key, value, headers)], dlq_reason=reason)
