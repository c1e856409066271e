"""The Genesys Cloud notification protocol, sans-I/O: text frame in, typed message out.

Like websockets' ``protocol.py`` this module never touches a socket: the
shard hands it every frame it receives and acts on the typed result; the
tests feed it strings. It follows the frames Genesys documents:

* ``{"topicName": "channel.metadata", "eventBody": {"message": "WebSocket Heartbeat"}}``
  about every 30 s → :class:`Heartbeat`;
* the answer to our ``{"message": "ping"}`` → :class:`Pong`;
* ``v2.system.socket_closing`` (maintenance: open a new socket to the same
  ``connectUri`` within about a minute) → :class:`SocketClosing`;
* ``v2.users.<id>.presence`` / ``v2.users.<id>.routingStatus`` (the expanded
  names of the combined ``v2.users.<id>?presence&routingStatus`` topic) →
  :class:`EventMessage` carrying a normalised :class:`~bridge.model.Change`;
* subscription answers without a topic (``{"result": "200", "status":
  "subscribed", …}``, ``{"result": "404", …}`` for a channel that no longer
  exists) → :class:`SubscriptionReply`;
* other ``v2.system.*`` frames → :class:`SystemMessage`; its body is the SDK's
  ``SystemMessageSystemMessage`` (``{channelId, systemTopicType, reason,
  correlationId, organizationId, userId, oauthClientId, message, data}``),
  ``systemTopicType`` one of :data:`SYSTEM_TOPIC_TYPES` (``no_longer_subscribed``,
  ``subscription_changed``, ``token_revoked``), ``reason``
  ``another_channel_subscribed`` or ``user_tokens_revoked``. The SDK does not
  name the ``topicName`` such a message arrives on; the bridge reads
  ``eventBody.systemTopicType`` on any ``v2.system.*`` topic, and the topic's
  last segment when the body lacks it. After ``no_longer_subscribed`` a
  channel keeps its heartbeats while it delivers no events (Genesys's own
  streaming client then allocates a new channel): the shard must act on it;
* other ``channel.metadata`` frames → :class:`SystemMessage`;
* any other topic → :class:`UnknownTopic` (Genesys can send topics nobody
  asked for: count and skip, never fatal).

Normalisation rules, written once in :mod:`bridge.genesys.normalise`
(re-exported here) and used by the REST models too (:mod:`bridge.genesys.rest`
calls :func:`presence_change` and :func:`routing_change` for reconciliation):

* ``systemPresence`` comes upper case ("ON_QUEUE") in some payloads, title
  case ("On Queue", "Meal") in others, and CamelCase in the presence
  definitions (the SDK's ``OrganizationPresenceDefinition.systemPresence``
  enum is ``Available, Away, Busy, Offline, Idle, OnQueue, Meal, Training,
  Meeting, Break``); every spelling is normalised to upper snake case.
* Timestamps (presence ``modifiedDate``, routing ``routingStatus.startTime``)
  are ISO-8601 with or without milliseconds, ``Z`` or an offset, and become
  aware UTC datetimes. Genesys's own published presence sample has no
  ``modifiedDate``: a *missing* (or empty) timestamp is not an error, the
  change takes ``observed_at`` with ``timestamp_known=False``. An
  *unparsable* one is an error.
* Unknown fields are ignored (Genesys adds fields over time).

Anything malformed raises :class:`~bridge.errors.ProtocolError` with a stable
``reason`` slug (:data:`REASONS`), and nothing else, for any input: the shard
sends such frames to the dead-letter topic.

Counting is left to the caller, so this module stays free of I/O and
globals: every message has a ``kind`` that is the
``bridge_genesys_events_total{kind}`` label (``presence``, ``routing_status``,
``heartbeat``, ``pong``, ``system``, ``unknown``); the shard does
``GENESYS_EVENTS.labels(kind=message.kind).inc()``.

It runs for every frame, so it uses msgspec structs for change frames
(:mod:`bridge.genesys.frames`), orjson for the rest, plain dataclasses, never pydantic.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar, Final

import orjson

from bridge.errors import ProtocolError
from bridge.genesys.frames import decode_change_frame
from bridge.genesys.normalise import (
    MIN_TIMESTAMP_LENGTH,
    STATUS_CACHE_SIZE,
    _bad_type,
    _missing,
    _opt_str,
    is_record_time,
    normalise_status,
    parse_timestamp,
    presence_change,
    routing_change,
)
from bridge.model import Change, Kind, Origin, PresenceValue, RoutingValue, event_id, known_time

__all__ = [
    "FRAME_KINDS",
    "HEARTBEAT_MESSAGE",
    "METADATA_TOPIC",
    "MIN_TIMESTAMP_LENGTH",
    "PING_FRAME",
    "PONG_MESSAGE",
    "REASONS",
    "SOCKET_CLOSING_TOPIC",
    "STATUS_CACHE_SIZE",
    "SYSTEM_TOPIC_TYPES",
    "EventMessage",
    "Heartbeat",
    "Message",
    "Pong",
    "SocketClosing",
    "SubscriptionReply",
    "SystemMessage",
    "UnknownTopic",
    "normalise_status",
    "parse_frame",
    "parse_timestamp",
    "ping_frame",
    "presence_change",
    "routing_change",
    "subscribe_frame",
    "unsubscribe_frame",
    "user_topic",
]

METADATA_TOPIC: Final = "channel.metadata"
SOCKET_CLOSING_TOPIC: Final = "v2.system.socket_closing"
SYSTEM_TOPIC_PREFIX: Final = "v2.system."
USERS_TOPIC_PREFIX: Final = "v2.users."
PRESENCE_SUFFIX: Final = ".presence"
ROUTING_SUFFIX: Final = ".routingStatus"
#: ``SystemMessageSystemMessage.systemTopicType`` values (the SDK's enum):
#: each means the channel stopped delivering what it was subscribed to.
SYSTEM_TOPIC_TYPES: Final = frozenset({"no_longer_subscribed", "subscription_changed", "token_revoked"})
HEARTBEAT_MESSAGE: Final = "WebSocket Heartbeat"
PONG_MESSAGE: Final = "pong"
#: Our application-level ping; Genesys answers with a ``channel.metadata`` pong.
PING_FRAME: Final = '{"message":"ping"}'

#: Every ``ProtocolError.reason`` this module raises (also DLQ/metric labels).
REASONS: Final = frozenset(
    {"invalid_json", "not_an_object", "missing_field", "bad_type", "bad_timestamp", "unexpected"}
)
#: Every ``kind`` a message can have (the ``bridge_genesys_events_total`` labels).
FRAME_KINDS: Final = frozenset({"presence", "routing_status", "heartbeat", "pong", "system", "unknown"})

_PRESENCE_TOPIC_OVERHEAD: Final = len(USERS_TOPIC_PREFIX) + len(PRESENCE_SUFFIX)
# Read for every change frame: module constants, not len() calls or enum attributes.
_PREFIX_LENGTH: Final = len(USERS_TOPIC_PREFIX)
_PRESENCE_CUT: Final = -len(PRESENCE_SUFFIX)
_ROUTING_CUT: Final = -len(ROUTING_SUFFIX)
_PRESENCE: Final = Kind.PRESENCE
_ROUTING: Final = Kind.ROUTING_STATUS
_STREAM: Final = Origin.STREAM
_ROUTING_TOPIC_OVERHEAD: Final = len(USERS_TOPIC_PREFIX) + len(ROUTING_SUFFIX)


# --------------------------------------------------------------------------- messages


@dataclass(slots=True)
class EventMessage:
    """A presence or routing-status change (``change.kind`` tells which).

    Not ``frozen``: one is built per change, and a frozen dataclass sets its
    field through ``object.__setattr__``; treat it as a value all the same.
    """

    change: Change

    @property
    def kind(self) -> str:
        """``presence`` or ``routing_status``."""
        return self.change.kind.value


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The server's ``WebSocket Heartbeat`` (about every 30 s)."""

    kind: ClassVar[str] = "heartbeat"


@dataclass(frozen=True, slots=True)
class Pong:
    """The answer to our ``{"message": "ping"}``."""

    kind: ClassVar[str] = "pong"


@dataclass(frozen=True, slots=True)
class SocketClosing:
    """``v2.system.socket_closing``: maintenance; open a new socket to the same connectUri now."""

    kind: ClassVar[str] = "system"


@dataclass(frozen=True, slots=True)
class SubscriptionReply:
    """The server's answer to a socket-side (un)subscribe, or an error such as a gone channel.

    ``result`` is the HTTP-like status as text ("200", "400", "404"…).
    """

    result: str
    status: str | None = None
    message: str | None = None
    correlation_id: str | None = None
    topics: tuple[str, ...] = field(default_factory=tuple)
    kind: ClassVar[str] = "system"

    @property
    def ok(self) -> bool:
        """True for a 2xx result."""
        return self.result.startswith("2")


@dataclass(frozen=True, slots=True)
class SystemMessage:
    """Another ``v2.system.*`` or ``channel.metadata`` frame.

    ``system_topic_type`` is set (one of :data:`SYSTEM_TOPIC_TYPES`) when the
    channel lost its subscriptions or token; ``reason`` and ``channel_id`` are
    what the body said. Any other system message is logged and ignored.
    """

    topic: str
    system_topic_type: str | None = None
    reason: str | None = None
    channel_id: str | None = None
    kind: ClassVar[str] = "system"


@dataclass(frozen=True, slots=True)
class UnknownTopic:
    """A topic we did not subscribe to: counted and skipped, never fatal."""

    topic: str
    kind: ClassVar[str] = "unknown"


Message = EventMessage | Heartbeat | Pong | SocketClosing | SubscriptionReply | SystemMessage | UnknownTopic

_HEARTBEAT: Final = Heartbeat()
_PONG: Final = Pong()
_SOCKET_CLOSING: Final = SocketClosing()


# --------------------------------------------------------------------------- normalisation


# --------------------------------------------------------------------------- parsing


def _correlation_id(doc: dict[str, object]) -> str | None:
    metadata = doc.get("metadata")
    if metadata is None:
        return None
    if type(metadata) is not dict:
        raise _bad_type("metadata", metadata)
    return _opt_str(metadata, "CorrelationId")


def _subscription_reply(doc: dict[str, object]) -> SubscriptionReply:
    result = doc["result"]
    if type(result) is int:
        result = str(result)
    elif type(result) is not str:
        raise _bad_type("result", result)
    raw_topics = doc.get("topics")
    topics: list[str] = []
    if raw_topics is not None:
        if type(raw_topics) is not list:
            raise _bad_type("topics", raw_topics)
        for item in raw_topics:
            if type(item) is str:
                topics.append(item)
            elif type(item) is dict and type(item.get("id")) is str:
                topics.append(item["id"])
            else:
                raise _bad_type("topics[]", item)
    return SubscriptionReply(
        result=result,
        status=_opt_str(doc, "status"),
        message=_opt_str(doc, "message"),
        correlation_id=_opt_str(doc, "correlationId"),
        topics=tuple(topics),
    )


def _metadata_message(doc: dict[str, object]) -> Message:
    body = doc.get("eventBody")
    message = body.get("message") if type(body) is dict else None
    if message == HEARTBEAT_MESSAGE:
        return _HEARTBEAT
    if message == PONG_MESSAGE:
        return _PONG
    if type(message) is str:
        lowered = message.lower()
        if lowered == "websocket heartbeat":
            return _HEARTBEAT
        if lowered == PONG_MESSAGE:
            return _PONG
    return SystemMessage(METADATA_TOPIC)


def _system_message(topic: str, doc: dict[str, object]) -> SystemMessage:
    body = doc.get("eventBody")
    if body is None:
        body = {}
    elif type(body) is not dict:
        raise _bad_type("eventBody", body)
    declared = _opt_str(body, "systemTopicType")
    suffix = topic[len(SYSTEM_TOPIC_PREFIX) :]
    topic_type = declared if declared is not None else suffix
    return SystemMessage(
        topic,
        system_topic_type=topic_type if topic_type in SYSTEM_TOPIC_TYPES else None,
        reason=_opt_str(body, "reason"),
        channel_id=_opt_str(body, "channelId"),
    )


def _parse(text: str | bytes, observed_at: datetime, received_at: float) -> Message:
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ProtocolError("frame is not JSON", reason="invalid_json") from None
    if type(doc) is not dict:
        raise ProtocolError(f"frame is a JSON {type(doc).__name__}, not an object", reason="not_an_object")
    topic = doc.get("topicName")
    if topic is None:
        if "result" in doc:
            return _subscription_reply(doc)
        raise _missing("topicName")
    if type(topic) is not str:
        raise _bad_type("topicName", topic)

    if topic.startswith(USERS_TOPIC_PREFIX):
        if topic.endswith(PRESENCE_SUFFIX) and len(topic) >= _PRESENCE_TOPIC_OVERHEAD:
            user_id = topic[len(USERS_TOPIC_PREFIX) : -len(PRESENCE_SUFFIX)]
            if "." in user_id:
                return UnknownTopic(topic)
            return EventMessage(
                presence_change(
                    user_id,
                    doc.get("eventBody"),
                    observed_at=observed_at,
                    received_at=received_at,
                    genesys_topic=topic,
                    correlation_id=_correlation_id(doc),
                )
            )
        if topic.endswith(ROUTING_SUFFIX) and len(topic) >= _ROUTING_TOPIC_OVERHEAD:
            user_id = topic[len(USERS_TOPIC_PREFIX) : -len(ROUTING_SUFFIX)]
            if "." in user_id:
                return UnknownTopic(topic)
            body = doc.get("eventBody")
            if type(body) is not dict:
                raise _missing("eventBody") if body is None else _bad_type("eventBody", body)
            return EventMessage(
                routing_change(
                    user_id,
                    body.get("routingStatus"),
                    observed_at=observed_at,
                    received_at=received_at,
                    genesys_topic=topic,
                    correlation_id=_correlation_id(doc),
                )
            )
        return UnknownTopic(topic)
    if topic == METADATA_TOPIC:
        return _metadata_message(doc)
    if topic == SOCKET_CLOSING_TOPIC:
        return _SOCKET_CLOSING
    if topic.startswith(SYSTEM_TOPIC_PREFIX):
        return _system_message(topic, doc)
    return UnknownTopic(topic)


def _fast_change(text: str | bytes, observed_at: datetime, received_at: float) -> EventMessage | None:
    """A well-formed change frame decoded by :mod:`~bridge.genesys.frames`; None: parse it generally.

    Gives exactly what :func:`_parse` gives for such a frame; any doubt (a
    missing or empty field, a dotted user id, a bad time, text that cannot
    be hashed) is left to :func:`_parse`, which names the error.
    """
    frame = decode_change_frame(text)
    if frame is None or (body := frame.eventBody) is None:
        return None
    topic = frame.topicName
    if not topic.startswith(USERS_TOPIC_PREFIX):
        return None
    if topic.endswith(PRESENCE_SUFFIX):
        user_id = topic[_PREFIX_LENGTH:_PRESENCE_CUT]
        definition = body.presenceDefinition
        if not user_id or "." in user_id or definition is None or definition.systemPresence is None:
            return None
        kind = _PRESENCE
        status = normalise_status(definition.systemPresence)
        value: PresenceValue | RoutingValue = PresenceValue(
            status, definition.id, body.message, body.source, body.primary
        )
        stamp = body.modifiedDate
    elif topic.endswith(ROUTING_SUFFIX) and (routing := body.routingStatus) is not None:
        user_id = topic[_PREFIX_LENGTH:_ROUTING_CUT]
        if not user_id or "." in user_id or routing.status is None:
            return None
        kind = _ROUTING
        status = normalise_status(routing.status)
        value = RoutingValue(status)
        stamp = routing.startTime
    else:
        return None
    if not status:
        return None
    try:
        if not stamp:
            changed = None
            changed_at = observed_at
        else:
            changed = changed_at = parse_timestamp(stamp) or observed_at
            if is_record_time(stamp):  # the text the records will carry: no need to format it
                known_time(changed_at, stamp)
        eid = event_id(user_id, kind, changed_at, value)
    except (ProtocolError, UnicodeError, ValueError, OverflowError):
        return None
    metadata = frame.metadata
    correlation_id = None if metadata is None else metadata.CorrelationId
    return EventMessage(
        Change(
            user_id,
            kind,
            changed_at,
            value,
            observed_at,
            _STREAM,
            eid,
            changed is not None,
            correlation_id,
            topic,
            received_at,
        )
    )


def parse_frame(text: str | bytes, *, observed_at: datetime, received_at: float) -> Message:
    """Turn one text frame into a typed message; raise only :class:`ProtocolError`.

    ``observed_at`` (wall clock, aware UTC) stands in for a missing Genesys
    timestamp and becomes ``Change.observed_at``; ``received_at`` is the
    monotonic reading for the delivery-latency metric. A change frame takes
    the typed shortcut of :func:`_fast_change` first.
    """
    try:
        return _fast_change(text, observed_at, received_at) or _parse(text, observed_at, received_at)
    except ProtocolError:
        raise
    except Exception as exc:  # a parser bug must not kill the shard: the frame goes to the DLQ
        raise ProtocolError(f"unexpected {type(exc).__name__} while parsing", reason="unexpected") from None


# --------------------------------------------------------------------------- frames we send


def user_topic(user_id: str) -> str:
    """The combined topic for one agent (counts as one of the channel's 1,000 topics)."""
    return f"{USERS_TOPIC_PREFIX}{user_id}?presence&routingStatus"


def ping_frame() -> str:
    """Our application-level ping (Genesys answers with a pong on ``channel.metadata``)."""
    return PING_FRAME


def _topics_frame(message: str, topics: Iterable[str], correlation_id: str | None) -> str:
    doc: dict[str, object] = {"message": message, "topics": list(topics)}
    if correlation_id is not None:
        doc["correlationId"] = correlation_id
    return orjson.dumps(doc).decode()


def subscribe_frame(topics: Iterable[str], correlation_id: str | None = None) -> str:
    """A socket-side subscribe request (answered by a :class:`SubscriptionReply`)."""
    return _topics_frame("subscribe", topics, correlation_id)


def unsubscribe_frame(topics: Iterable[str], correlation_id: str | None = None) -> str:
    """A socket-side unsubscribe request (answered by a :class:`SubscriptionReply`)."""
    return _topics_frame("unsubscribe", topics, correlation_id)
