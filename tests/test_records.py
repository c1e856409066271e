"""bridge.records: schema files in step with the models, encoders true to the models, stable ids."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

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
)
from bridge.records import (
    SCHEMA_DIR,
    encode_dlq,
    encode_event,
    encode_state,
    event_id,
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


def test_dlq_record_validates_and_truncates() -> None:
    """encode_dlq builds the DLQ model and bounds the kept frame."""
    frame = "x" * (records.DLQ_FRAME_LIMIT + 10)
    doc = validate(
        encode_dlq(shard=1, channel_id="c", reason="bad_json", error="boom", frame=frame, observed_at=T0)
    )
    assert len(doc["frame"]) == records.DLQ_FRAME_LIMIT


def test_event_id_is_stable_and_sensitive_to_each_input() -> None:
    """The same change gets the same id; changing user, kind, time or value changes it; the label does not."""
    base = event_id("u-1", Kind.PRESENCE, T0, PRESENCE)
    assert base == event_id("u-1", Kind.PRESENCE, T0, PresenceValue("ON_QUEUE", "d-1", "busy day"))
    variants = [
        event_id("u-2", Kind.PRESENCE, T0, PRESENCE),
        event_id("u-1", Kind.ROUTING_STATUS, T0, PRESENCE),
        event_id("u-1", Kind.PRESENCE, T0 + timedelta(milliseconds=1), PRESENCE),
        event_id("u-1", Kind.PRESENCE, T0, PresenceValue("AVAILABLE", "d-1", "busy day")),
        event_id("u-1", Kind.PRESENCE, T0, PresenceValue("ON_QUEUE", "d-2", "busy day")),
        event_id("u-1", Kind.PRESENCE, T0, PresenceValue("ON_QUEUE", "d-1", "other")),
    ]
    assert len({base, *variants}) == len(variants) + 1
    assert event_id("u-1", Kind.ROUTING_STATUS, T0, ROUTING) != event_id(
        "u-1", Kind.ROUTING_STATUS, T0, RoutingValue("IDLE")
    )


@given(st.datetimes(timezones=st.just(UTC)))
def test_format_time_is_isoformat_to_the_millisecond(value: datetime) -> None:
    """The orjson-based formatter writes exactly what isoformat would, truncated to ms, with a Z."""
    records.format_time.cache_clear()
    assert records.format_time(value) == value.isoformat(timespec="milliseconds")[:23] + "Z"


def test_utc_now_ms_is_the_wall_clock_to_the_millisecond() -> None:
    before = datetime.now(UTC)
    now = records.utc_now_ms()
    after = datetime.now(UTC)
    assert now.tzinfo is UTC
    assert now.microsecond % 1000 == 0
    assert before - timedelta(milliseconds=1) < now <= after
    # Within one millisecond it is the same object (format_time's cache then hits).
    same = [records.utc_now_ms() for _ in range(50)]
    assert any(a is b for a, b in itertools.pairwise(same))
