"""bridge.kafka.state: the agent-state record read back as written."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bridge.kafka.state import decode_state
from bridge.model import AgentState, PresenceValue, RoutingValue, VersionedPresence, VersionedRouting
from bridge.records import encode_state

T0 = datetime(2026, 3, 1, 9, 30, 15, 250_000, tzinfo=UTC)


def test_a_state_round_trips_through_the_record() -> None:
    """What encode_state writes, decode_state reads back (presence, routing, times, event ids)."""
    state = AgentState(
        "u1",
        VersionedPresence(
            PresenceValue("AWAY", presence_definition_id="p-1", message="lunch", presence_label="Lunch"),
            T0,
            "e-1",
        ),
        VersionedRouting(RoutingValue("IDLE"), T0, "e-2"),
    )
    assert decode_state("u1", encode_state(state, 3, T0)) == state
    assert decode_state("u2", encode_state(AgentState("u2"), 0, T0)) == AgentState("u2")


def test_a_value_that_is_no_state_record_raises() -> None:
    """Not JSON, or a document without the state fields: an error the readers skip on."""
    with pytest.raises(ValueError):
        decode_state("u1", b"not json")
    with pytest.raises(KeyError):
        decode_state("u1", b'{"presence": null}')
