"""bridge.records: schema files in step with the models, encoders true to the models."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from bridge import records
from bridge.kafka.state import decode_state
from bridge.model import (
    AgentState,
    Change,
    Kind,
    Origin,
    PendingBackfill,
    PresenceValue,
    RoutingValue,
    VersionedPresence,
    VersionedRouting,
    event_id,
)
from bridge.records import (
    GAP_CAUSES,
    GAP_FALLBACKS,
    SCHEMA_DIR,
    GapRecord,
    encode_change,
    encode_dlq,
    encode_event,
    encode_gap,
    encode_state,
    gap_id,
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


def test_a_pending_backfill_is_written_into_the_state_and_read_back() -> None:
    """The backfill field validates, only where given; decode_state reads it (a new owner's view)."""
    state = AgentState("u-1", VersionedPresence(PRESENCE, T0, "e1"), VersionedRouting(ROUTING, T0, "e2"))
    ms = T0.replace(microsecond=123000)  # what the records keep of a time
    pending = PendingBackfill(ms - timedelta(seconds=30), ms - timedelta(seconds=20), ms, ("e1", "e0"))
    raw = encode_state(state, 2, T0, pending)
    doc = validate(raw)
    assert doc["backfill"]["eventIds"] == ["e1", "e0"]
    assert decode_state("u-1", raw).pending == pending
    assert "backfill" not in validate(encode_state(state, 2, T0))
    assert decode_state("u-1", encode_state(state, 2, T0)).pending is None
    change = Change("u-1", Kind.ROUTING_STATUS, T0, ROUTING, T0, Origin.STREAM, "e2")
    _, marked = encode_change(change, state, 2, None, T0, pending=pending)
    assert marked == raw


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


# Produced by main's encoder (commit cee6ae4) before the late flag and the backfill origin existed.
STREAM_PRESENCE_BYTES = (
    b'{"schema":"genesys.presence.v1","eventId":"5fa873bf0a59f5f44c983d4c6f04e291","userId":"u-1",'
    b'"changedAt":"2026-05-01T09:00:00.123Z","observedAt":"2026-05-01T09:00:01.123Z","origin":"stream",'
    b'"shard":4,"channelId":"chan-1","systemPresence":"ON_QUEUE","presenceDefinitionId":"d-1",'
    b'"presenceLabel":"On Queue","message":"busy day","source":"PURECLOUD","primary":true}'
)
RECONCILE_ROUTING_BYTES = (
    b'{"schema":"genesys.routing-status.v1","eventId":"21313b49806d58b52c93d5949ff5e073","userId":"u-1",'
    b'"changedAt":"2026-05-01T09:00:00.123Z","observedAt":"2026-05-01T09:00:01.123Z","origin":"reconcile",'
    b'"shard":4,"channelId":"chan-1","status":"INTERACTING"}'
)


@pytest.mark.parametrize(
    ("kind", "value", "origin", "expected"),
    [
        (Kind.PRESENCE, PRESENCE, Origin.STREAM, STREAM_PRESENCE_BYTES),
        (Kind.ROUTING_STATUS, ROUTING, Origin.RECONCILE, RECONCILE_ROUTING_BYTES),
    ],
)
def test_existing_records_are_byte_identical(
    kind: Kind, value: PresenceValue | RoutingValue, origin: Origin, expected: bytes
) -> None:
    """A stream or reconcile record encodes exactly as before the late flag (no late key)."""
    change = Change(
        "u-1", kind, T0, value, T0 + timedelta(seconds=1), origin, event_id("u-1", kind, T0, value)
    )
    assert encode_event(change, 4, "chan-1") == expected
    assert encode_event(change, 4, "chan-1", late=False) == expected


def test_a_late_backfill_record_says_so() -> None:
    """late=True adds "late": true to a backfill record, which the model accepts; nothing else changes."""
    change = Change(
        "u-1",
        Kind.ROUTING_STATUS,
        T0,
        ROUTING,
        T0,
        Origin.BACKFILL,
        event_id("u-1", Kind.ROUTING_STATUS, T0, ROUTING),
    )
    on_time = validate(encode_event(change, 4, "chan-1"))
    late = validate(encode_event(change, 4, "chan-1", late=True))
    assert "late" not in on_time
    assert on_time["origin"] == "backfill"
    assert late == {**on_time, "late": True}


def gap(**overrides: Any) -> GapRecord:
    fields: dict[str, Any] = {
        "schema": "bridge.gaps.v1",
        "gap_id": gap_id("bridge-a", 2, T0, "reconnect"),
        "shard": 2,
        "channel_id": "chan-9",
        "cause": "reconnect",
        "from": T0,
        "to": T0 + timedelta(seconds=42),
        "agents": 7,
        "backfilled": 3,
        "late": 1,
        "recovered": True,
        "fallback": None,
        "written_at": T0 + timedelta(minutes=1),
    }
    fields.update(overrides)
    return GapRecord.model_validate(fields)


def test_gap_record_encodes_the_contract_fields() -> None:
    """encode_gap writes the camelCase gap record, times in ms Z, and it validates against the model."""
    doc = validate(encode_gap(gap()))
    assert doc == {
        "schema": "bridge.gaps.v1",
        "gapId": gap_id("bridge-a", 2, T0, "reconnect"),
        "shard": 2,
        "channelId": "chan-9",
        "cause": "reconnect",
        "from": "2026-05-01T09:00:00.123Z",
        "to": "2026-05-01T09:00:42.123Z",
        "agents": 7,
        "backfilled": 3,
        "late": 1,
        "recovered": True,
        "fallback": None,
        "writtenAt": "2026-05-01T09:01:00.123Z",
    }


@pytest.mark.parametrize("fallback", GAP_FALLBACKS)
def test_gap_record_takes_every_fallback(fallback: str) -> None:
    """Each fallback reason of the contract is a valid unrecovered gap record."""
    assert validate(encode_gap(gap(recovered=False, fallback=fallback)))["fallback"] == fallback


def test_gap_record_refuses_an_unknown_cause() -> None:
    """cause is one of the contract's; anything else is a validation error."""
    causes = {"reconnect", "handover", "rotation", "start", "takeover", "resubscribe", "sweep"}
    assert set(GAP_CAUSES) == causes
    with pytest.raises(ValueError):
        gap(cause="solar-flare")


def test_gap_id_is_stable_and_distinguishes_gaps() -> None:
    """The same bridge, shard, start and cause give one id; any difference another."""
    base = gap_id("bridge-a", 2, T0, "reconnect")
    assert base == gap_id("bridge-a", 2, T0 + timedelta(microseconds=1), "reconnect")  # ms precision
    assert len(base) == 32
    assert int(base, 16) >= 0
    others = {
        gap_id("bridge-b", 2, T0, "reconnect"),
        gap_id("bridge-a", 3, T0, "reconnect"),
        gap_id("bridge-a", 2, T0 + timedelta(milliseconds=1), "reconnect"),
        gap_id("bridge-a", 2, T0, "takeover"),
    }
    assert base not in others
    assert len(others) == 4


def test_readme_record_examples_match_the_models() -> None:
    """Every JSON example in README "Topics and records" is a valid record of its schema."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("\n## Topics and records\n", 1)[1].split("\n## ", 1)[0]
    examples = [orjson.loads(block) for block in re.findall(r"```json\n(.*?)```", section, re.DOTALL)]
    assert {doc["schema"] for doc in examples} >= {"bridge.gaps.v1", "genesys.presence.v1"}
    for doc in examples:
        model_for(doc["schema"]).model_validate(doc)
