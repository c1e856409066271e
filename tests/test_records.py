"""bridge.records: schema files in step with the models, encoders true to the models."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from bridge import records
from bridge.model import (
    AgentState,
    Change,
    Kind,
    Origin,
    PresenceValue,
    RoutingValue,
    VersionedPresence,
    VersionedRouting,
    event_id,
)
from bridge.records import (
    SCHEMA_DIR,
    encode_change,
    encode_dlq,
    encode_event,
    encode_state,
    json_schemas,
    model_for,
)

T0 = datetime(2026, 5, 1, 9, 0, 0, 123456, tzinfo=UTC)
PRESENCE = PresenceValue("ON_QUEUE", "d-1", "busy day", "PURECLOUD", True, "On Queue")
ROUTING = RoutingValue("INTERACTING")


def validate(raw: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(raw)
    model_for(doc["schema"]).model_validate(doc)  # extra="forbid": no field more, none missing
    return doc


def test_schema_files_match_the_models() -> None:
    """bridge/schemas holds exactly the generated JSON Schemas (run `python -m bridge.records --write`)."""
    generated = json_schemas()
    on_disk = {p.name: p.read_text() for p in SCHEMA_DIR.glob("*.json")}
    assert on_disk == generated
    assert records.main([]) == 0


@pytest.mark.parametrize(
    ("kind", "value", "schema"),
    [
        (Kind.PRESENCE, PRESENCE, "genesys.presence.v1"),
        (Kind.PRESENCE, PresenceValue("OFFLINE"), "genesys.presence.v1"),
        (Kind.ROUTING_STATUS, ROUTING, "genesys.routing-status.v1"),
    ],
)
def test_event_records_validate(kind: Kind, value: PresenceValue | RoutingValue, schema: str) -> None:
    """encode_event builds exactly the fields of the presence and routing-status models."""
    change = Change(
        "u-1", kind, T0, value, T0 + timedelta(seconds=1), Origin.RECONCILE, event_id("u-1", kind, T0, value)
    )
    doc = validate(encode_event(change, 4, None))
    assert doc["schema"] == schema
    assert doc["changedAt"] == "2026-05-01T09:00:00.123Z"
    assert (doc["origin"], doc["shard"], doc["channelId"]) == ("reconcile", 4, None)


@pytest.mark.parametrize("full", [True, False])
def test_state_record_validates(full: bool) -> None:
    """encode_state builds exactly the agent-state model, with or without presence and routing status."""
    state = AgentState("u-1")
    if full:
        state = AgentState("u-1", VersionedPresence(PRESENCE, T0, "e1"), VersionedRouting(ROUTING, T0, "e2"))
    doc = validate(encode_state(state, 2, T0))
    assert (doc["presence"] is None) is not full


@pytest.mark.parametrize(
    ("kind", "value"),
    [(Kind.PRESENCE, PRESENCE), (Kind.ROUTING_STATUS, ROUTING), (Kind.PRESENCE, PresenceValue("IDLE"))],
)
def test_encode_change_gives_the_bytes_of_encode_event_and_encode_state(
    kind: Kind, value: PresenceValue | RoutingValue
) -> None:
    """The one-pass encoding equals the two reference ones, whether or not the state repeats the time."""
    change = Change("u-1", kind, T0, value, T0, Origin.STREAM, event_id("u-1", kind, T0, value))
    other = T0 - timedelta(minutes=3)
    if kind is Kind.PRESENCE:
        assert isinstance(value, PresenceValue)
        state = AgentState(
            "u-1", VersionedPresence(value, T0, change.event_id), VersionedRouting(ROUTING, other, "e2")
        )
    else:
        assert isinstance(value, RoutingValue)
        state = AgentState("u-1", None, VersionedRouting(value, T0, change.event_id))
    updated = T0 + timedelta(milliseconds=5)
    assert encode_change(change, state, 6, "ch-1", updated) == (
        encode_event(change, 6, "ch-1"),
        encode_state(state, 6, updated),
    )


def test_dlq_record_validates_and_truncates() -> None:
    """encode_dlq builds the DLQ model and bounds the kept frame."""
    frame = "x" * (records.DLQ_FRAME_LIMIT + 10)
    doc = validate(
        encode_dlq(shard=1, channel_id="c", reason="bad_json", error="boom", frame=frame, observed_at=T0)
    )
    assert len(doc["frame"]) == records.DLQ_FRAME_LIMIT
