"""The agent-state record (the compacted state topic's value), read back.

:func:`decode_state` reads the value :func:`bridge.records.encode_state`
writes; :mod:`bridge.statestore` (takeover, audit) and ``tail`` both read
agent states through it. Light on purpose (no Kafka client): ``tail``
imports it at CLI start.
"""

from __future__ import annotations

from datetime import datetime

import orjson

from bridge.model import (
    AgentState,
    PendingBackfill,
    PresenceValue,
    RoutingValue,
    VersionedPresence,
    VersionedRouting,
)

__all__ = ["decode_state"]


def decode_state(user_id: str, value: bytes) -> AgentState:
    """An :class:`AgentState` from an agent-state record value (raises ValueError/KeyError/TypeError)."""
    doc = orjson.loads(value)
    presence = doc["presence"]
    routing = doc["routingStatus"]
    state = AgentState(user_id)
    if presence is not None:
        state.presence = VersionedPresence(
            PresenceValue(
                system_presence=presence["systemPresence"],
                presence_definition_id=presence["presenceDefinitionId"],
                message=presence["message"],
                presence_label=presence["presenceLabel"],
            ),
            _time(presence["changedAt"]),
            presence["eventId"],
        )
    if routing is not None:
        state.routing = VersionedRouting(
            RoutingValue(routing["status"]), _time(routing["changedAt"]), routing["eventId"]
        )
    pending = doc.get("backfill")
    if pending is not None:
        state.pending = PendingBackfill(
            _time(pending["presenceFrom"]),
            _time(pending["routingStatusFrom"]),
            _time(pending["to"]),
            tuple(str(i) for i in pending["eventIds"]),
        )
    return state


def _time(text: str) -> datetime:
    # Python 3.11's fromisoformat reads the trailing "Z" that format_time writes.
    return datetime.fromisoformat(text)
