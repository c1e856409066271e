"""Kafka record contract: the values downstream consumers read.

The pydantic models here are the single source of the JSON Schema files in
``bridge/schemas/`` (``python -m bridge.records --write`` regenerates them; a
test fails when they drift). On the hot path records are encoded from the
domain :class:`~bridge.model.Change` with orjson by :func:`encode_event` and
:func:`encode_state`, which build exactly the fields of these models (a test
validates encoded records against the models with ``extra="forbid"``).

Every event value carries ``schema``, ``eventId`` (a stable hash of userId,
kind, change time and value: the same change always gets the same id),
``userId``, ``changedAt`` (Genesys's own time), ``observedAt`` (when the bridge
received it), ``origin`` (``stream``, ``reconcile`` or ``backfill``),
``shard`` and ``channelId``; a backfilled record written after the agent's
newer records also carries ``late: true`` (the key is absent otherwise, so
every other record is byte-for-byte what it was before the flag existed).
The gaps topic's :class:`GapRecord` says where the stream had gaps. See README
"Topics and records".
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal, Protocol, get_args

import orjson
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from bridge.model import AgentState, Change, Kind, PendingBackfill, RoutingValue, format_time, utc_now_ms

__all__ = [
    "DLQ_SCHEMA",
    "GAP_CAUSES",
    "GAP_FALLBACKS",
    "GAP_SCHEMA",
    "PRESENCE_SCHEMA",
    "ROUTING_STATUS_SCHEMA",
    "SCHEMA_DIR",
    "STATE_SCHEMA",
    "AgentStateRecord",
    "DlqRecord",
    "GapCause",
    "GapFallback",
    "GapRecord",
    "Pending",
    "PendingBackfillRecord",
    "PresenceRecord",
    "PresenceStateRecord",
    "RoutingStateRecord",
    "RoutingStatusRecord",
    "encode_change",
    "encode_dlq",
    "encode_event",
    "encode_gap",
    "encode_state",
    "event_type",
    "gap_id",
    "json_schemas",
    "model_for",
    "utc_now_ms",  # kept for bridge.sink until it imports bridge.model (the clock lives there)
]

PRESENCE_SCHEMA = "genesys.presence.v1"
ROUTING_STATUS_SCHEMA = "genesys.routing-status.v1"
STATE_SCHEMA = "genesys.agent-state.v1"
DLQ_SCHEMA = "bridge.dlq.v1"
GAP_SCHEMA = "bridge.gaps.v1"
#: What opened a gap (``GapRecord.cause``).
GapCause = Literal["reconnect", "handover", "rotation", "start", "takeover", "resubscribe", "sweep"]
GAP_CAUSES: Final = get_args(GapCause)
#: Why a gap's backfill gave up (``GapRecord.fallback``; the bridge_backfill_fallbacks_total reason).
GapFallback = Literal["forbidden", "unavailable", "budget", "too_old"]
GAP_FALLBACKS: Final = get_args(GapFallback)
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
EVENT_TYPE = {Kind.PRESENCE: "presence", Kind.ROUTING_STATUS: "routing-status"}
SCHEMA_BY_KIND = {Kind.PRESENCE: PRESENCE_SCHEMA, Kind.ROUTING_STATUS: ROUTING_STATUS_SCHEMA}
#: How much of an undecodable frame the DLQ keeps (frames are small; this bounds a hostile one).
DLQ_FRAME_LIMIT = 64 * 1024
#: A time no state holds (``is`` never matches): encode_state has no pre-formatted time.
_NEVER = datetime(1, 1, 1)


class _Record(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class _EventRecord(_Record):
    event_id: str = Field(description="Stable hash of userId, kind, changedAt and value.")
    user_id: str = Field(description="Genesys user id (also the record key).")
    changed_at: datetime = Field(description="When Genesys says the change happened (ISO-8601 UTC).")
    observed_at: datetime = Field(description="When the bridge received or reconciled it.")
    origin: Literal["stream", "reconcile", "backfill"] = Field(
        description=(
            "stream: pushed over the notification socket; reconcile: found by the bulk APIs after a gap; "
            "backfill: read from Genesys's analytics history of a gap."
        )
    )
    shard: int = Field(description="The shard (control-topic partition) that wrote it.")
    channel_id: str | None = Field(description="The notification channel it came through, when any.")
    late: bool = Field(
        False,
        description=(
            "Present (and true) only on a change written after newer records of the same agent (found "
            "in history after the hold, or delivered by Genesys out of order): out of order by design, "
            "never applied to the compacted state."
        ),
    )


class PresenceRecord(_EventRecord):
    """A presence change (topic ``genesys.presence.v1``)."""

    schema_: Literal["genesys.presence.v1"] = Field(alias="schema")
    system_presence: str = Field(description="Normalised upper snake case: AVAILABLE, ON_QUEUE, MEAL…")
    presence_definition_id: str | None
    presence_label: str | None = Field(description="The org's label for the definition, when known.")
    message: str | None
    source: str | None
    primary: bool | None


class RoutingStatusRecord(_EventRecord):
    """A routing-status change (topic ``genesys.routing-status.v1``)."""

    schema_: Literal["genesys.routing-status.v1"] = Field(alias="schema")
    status: str = Field(description="OFF_QUEUE, IDLE, INTERACTING, NOT_RESPONDING, COMMUNICATING.")


class PresenceStateRecord(_Record):
    system_presence: str
    presence_definition_id: str | None
    presence_label: str | None
    message: str | None
    changed_at: datetime
    event_id: str


class RoutingStateRecord(_Record):
    status: str
    changed_at: datetime
    event_id: str


class PendingBackfillRecord(_Record):
    presence_from: datetime = Field(description="Presence changes after this may be missing.")
    routing_status_from: datetime = Field(description="Routing-status changes after this may be missing.")
    to: datetime = Field(
        description="When the stream flowed again after the gap (when the gap began, while it is still open)."
    )
    event_ids: list[str] = Field(description="Changes of the agent written since the gap began.")


class AgentStateRecord(_Record):
    """Latest presence and routing status of one agent (compacted ``genesys.agent-state.v1``).

    A tombstone (null value) replaces it when the agent leaves the roster.
    """

    schema_: Literal["genesys.agent-state.v1"] = Field(alias="schema")
    user_id: str
    presence: PresenceStateRecord | None
    routing_status: RoutingStateRecord | None
    updated_at: datetime = Field(description="When the bridge wrote this state.")
    shard: int
    backfill: PendingBackfillRecord | None = Field(
        None,
        description=(
            "Present only while the agent's history of a gap is not yet all in the event topics (its "
            "backfill is pending): the state is current, some transitions before it may still arrive, "
            "late. The next state written without it says the backfill is done."
        ),
    )


class DlqRecord(_Record):
    """A frame the bridge could not understand (``bridge.dlq.v1``), kept with the reason."""

    schema_: Literal["bridge.dlq.v1"] = Field(alias="schema")
    shard: int
    channel_id: str | None
    reason: str = Field(description="Stable slug, also the bridge_dlq_records_total label.")
    error: str
    frame: str = Field(description="The frame text as received (truncated to 64 KiB).")
    observed_at: datetime


class GapRecord(_Record):
    """One gap of a shard's stream and what its backfill recovered (``bridge.gaps.v1``, key ``shard-<n>``).

    Written when the gap's backfill ends; a later retry that recovers a gap
    written unrecovered writes the same ``gapId`` again with ``recovered``
    true (keep the last record per ``gapId``).
    """

    schema_: Literal["bridge.gaps.v1"] = Field(alias="schema")
    gap_id: str = Field(description="Stable hash of bridgeId, shard, from and cause.")
    shard: int
    channel_id: str | None = Field(description="The notification channel after the gap, when any.")
    cause: GapCause = Field(description="What opened the gap.")
    from_: datetime = Field(alias="from", description="Last frame seen before the gap (ISO-8601 UTC).")
    to: datetime = Field(description="When the stream flowed again.")
    agents: int = Field(description="The shard's members at the end of the gap.")
    backfilled: int = Field(description="Transitions written from Genesys's history.")
    late: int = Field(description="Of those, how many were written late (late: true).")
    recovered: bool = Field(description="Every transition of the gap is in Kafka.")
    fallback: GapFallback | None = Field(
        description="Why the backfill gave up (reconciliation then wrote the current state), or null."
    )
    written_at: datetime


class Pending(Protocol):
    """An agent whose backfill is pending: its state records say so (``backfill``)."""

    def pending(self) -> PendingBackfill: ...


def gap_id(bridge_id: str, shard: int, from_: datetime, cause: str) -> str:
    """A gap's stable id: blake2b (16 bytes, hex) of ``bridgeId|shard|from|cause``, ``from`` as written."""
    raw = f"{bridge_id}|{shard}|{format_time(from_)}|{cause}".encode()
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


def encode_gap(gap: GapRecord) -> bytes:
    """The gaps-topic value of ``gap`` (times in ms with ``Z``, as every record writes them)."""
    return orjson.dumps(
        {
            "schema": GAP_SCHEMA,
            "gapId": gap.gap_id,
            "shard": gap.shard,
            "channelId": gap.channel_id,
            "cause": gap.cause,
            "from": format_time(gap.from_),
            "to": format_time(gap.to),
            "agents": gap.agents,
            "backfilled": gap.backfilled,
            "late": gap.late,
            "recovered": gap.recovered,
            "fallback": gap.fallback,
            "writtenAt": format_time(gap.written_at),
        }
    )


def _event_doc(change: Change, shard: int, channel_id: str | None, changed_at: str) -> dict[str, Any]:
    """The event record's fields, in their order (``changed_at`` already formatted)."""
    value = change.value
    if isinstance(value, RoutingValue):
        return {
            "schema": SCHEMA_BY_KIND[change.kind],
            "eventId": change.event_id,
            "userId": change.user_id,
            "changedAt": changed_at,
            "observedAt": format_time(change.observed_at),
            "origin": change.origin,  # a StrEnum: orjson writes its value
            "shard": shard,
            "channelId": channel_id,
            "status": value.status,
        }
    return {
        "schema": SCHEMA_BY_KIND[change.kind],
        "eventId": change.event_id,
        "userId": change.user_id,
        "changedAt": changed_at,
        "observedAt": format_time(change.observed_at),
        "origin": change.origin,
        "shard": shard,
        "channelId": channel_id,
        "systemPresence": value.system_presence,
        "presenceDefinitionId": value.presence_definition_id,
        "presenceLabel": value.presence_label,
        "message": value.message,
        "source": value.source,
        "primary": value.primary,
    }


def _state_doc(
    state: AgentState,
    shard: int,
    updated_at: str,
    known: datetime,
    known_text: str,
    *,
    pending: PendingBackfill | None = None,
) -> dict[str, Any]:
    """The state record's fields; a time that ``is`` ``known`` is written as ``known_text``."""
    presence = state.presence
    routing = state.routing
    if presence is None:
        presence_doc = None
    else:
        at = presence.changed_at
        value = presence.value
        presence_doc = {
            "systemPresence": value.system_presence,
            "presenceDefinitionId": value.presence_definition_id,
            "presenceLabel": value.presence_label,
            "message": value.message,
            "changedAt": known_text if at is known else format_time(at),
            "eventId": presence.event_id,
        }
    if routing is None:
        routing_doc = None
    else:
        at = routing.changed_at
        routing_doc = {
            "status": routing.value.status,
            "changedAt": known_text if at is known else format_time(at),
            "eventId": routing.event_id,
        }
    doc: dict[str, Any] = {
        "schema": STATE_SCHEMA,
        "userId": state.user_id,
        "presence": presence_doc,
        "routingStatus": routing_doc,
        "updatedAt": updated_at,
        "shard": shard,
    }
    if pending is not None:
        doc["backfill"] = {
            "presenceFrom": format_time(pending.presence_from),
            "routingStatusFrom": format_time(pending.routing_from),
            "to": format_time(pending.end),
            "eventIds": list(pending.written),
        }
    return doc


def encode_event(change: Change, shard: int, channel_id: str | None, *, late: bool = False) -> bytes:
    """The event-topic value for ``change``; ``late`` adds ``"late": true`` (nothing when false)."""
    doc = _event_doc(change, shard, channel_id, format_time(change.changed_at))
    if late:
        doc["late"] = True
    return orjson.dumps(doc)


def encode_state(
    state: AgentState, shard: int, updated_at: datetime, pending: PendingBackfill | None = None
) -> bytes:
    """The compacted state-topic value for one agent (``pending``: its ``backfill`` field)."""
    return orjson.dumps(_state_doc(state, shard, format_time(updated_at), _NEVER, "", pending=pending))


def encode_change(
    change: Change,
    state: AgentState,
    shard: int,
    channel_id: str | None,
    updated_at: datetime,
    *,
    pending: PendingBackfill | None = None,
) -> tuple[bytes, bytes]:
    """Both records of an accepted change in one pass: ``(encode_event(...), encode_state(...))``.

    The same bytes as those two calls; the change's time is formatted once
    for both (the state repeats it for the kind that changed).
    """
    at = change.changed_at
    changed_at = format_time(at)
    return (
        orjson.dumps(_event_doc(change, shard, channel_id, changed_at)),
        orjson.dumps(_state_doc(state, shard, format_time(updated_at), at, changed_at, pending=pending)),
    )


def encode_dlq(
    *, shard: int, channel_id: str | None, reason: str, error: str, frame: str, observed_at: datetime
) -> bytes:
    """The dead-letter value for a frame that could not be understood."""
    return orjson.dumps(
        {
            "schema": DLQ_SCHEMA,
            "shard": shard,
            "channelId": channel_id,
            "reason": reason,
            "error": error,
            "frame": frame[:DLQ_FRAME_LIMIT],
            "observedAt": format_time(observed_at),
        }
    )


def event_type(kind: Kind) -> str:
    """The ``event-type`` header value."""
    return EVENT_TYPE[kind]


_MODELS: dict[str, type[BaseModel]] = {
    PRESENCE_SCHEMA: PresenceRecord,
    ROUTING_STATUS_SCHEMA: RoutingStatusRecord,
    STATE_SCHEMA: AgentStateRecord,
    DLQ_SCHEMA: DlqRecord,
    GAP_SCHEMA: GapRecord,
}


def json_schemas() -> dict[str, str]:
    """File name → JSON Schema text, generated from the models."""
    out: dict[str, str] = {}
    for name, model in _MODELS.items():
        schema = model.model_json_schema(by_alias=True, mode="serialization")
        schema["$id"] = f"https://presence-bridge.dev/schemas/{name}.json"
        schema["title"] = name
        out[f"{name}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def model_for(schema: str) -> type[BaseModel]:
    """The pydantic model of a record's ``schema`` field."""
    return _MODELS[schema]


def main(argv: list[str] | None = None) -> int:
    """``python -m bridge.records --write|--check``: keep bridge/schemas in step with the models."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    drift = []
    for filename, text in json_schemas().items():
        path = SCHEMA_DIR / filename
        if args.write:
            SCHEMA_DIR.mkdir(exist_ok=True)
            path.write_text(text)
        elif not path.exists() or path.read_text() != text:
            drift.append(filename)
    if drift:
        names = ", ".join(drift)
        print(f"schemas out of date: {names} (run python -m bridge.records --write)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
